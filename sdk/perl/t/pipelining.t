# Pipelining (docs/worker-protocol.md, "Pipelining (optional)"): calls queued behind an
# error are answered "aborted" and never run. The scenarios of
# sdk/python/tests/sdk_cases.py (change both together).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Math::BigInt ();
use Test::More;
use WorkerProc qw(scenario canon ep same_json);
use SDKWorker qw(start_worker);

SDKWorker::plan();

# Sends all calls ([method, [args], ep], ep left out when not given) at once, then returns
# their replies, checking that there is one per call, in order.
sub pipeline {
    my ($w, @calls) = @_;
    my @msgs = map { my ($m, $args, @ep) = @$_; $w->call_msg($m, @$args, (@ep ? ep($ep[0]) : ())) } @calls;
    $w->send($_) for @msgs;
    my @replies = map { $w->recv } @msgs;
    is(canon([ map { $_->{id} } @replies ]), canon([ map { $_->{id} } @msgs ]), 'one reply per call, in order');
    return (\@msgs, \@replies);
}

sub types { return join ' ', map { $_->{t} } @{ $_[0] } }

scenario 'ready announces pipelining' => sub {
    my $w = start_worker();    # checks that ready is exactly {"t":"ready","v":1,"pipeline":true}
    $w->send({ t => 'done' });
    same_json($w->result('echo', 1, ep(0)), '[1]', 'a call with ep runs');
};

scenario 'pipelined calls behind an error are aborted' => sub {
    # begin / insert (fails) / commit, sent at once: commit was made before the application
    # saw the error (ep 0) and must not run; a call made after it saw the error (ep 1) runs.
    my $w = start_worker();
    my ($msgs, $replies) = pipeline($w, [ 'fail', ['insert failed'], 0 ], [ 'note', ['commit'], 0 ], [ 'note', ['after'], 1 ]);
    is(types($replies), 'err aborted ok', 'replies');
    is($replies->[0]{e}{type}, 'ConformanceError', 'the error');
    same_json($replies->[1], qq({"t": "aborted", "id": $msgs->[1]{id}}), 'aborted: no logs, no r');
    is($replies->[2]{r}, 'after', 'ep 1 ran');
    same_json($w->result('notes'), '["after"]', '"commit" never ran');
};

scenario 'pipelined calls without errors all run' => sub {
    my $w = start_worker();
    my ($msgs, $replies) = pipeline($w, map { [ 'note', [$_], 0 ] } 0 .. 9);
    is(canon([ map { [ $_->{t}, $_->{r} ] } @$replies ]), canon([ map { [ 'ok', $_ ] } 0 .. 9 ]), 'all ok');
    same_json($w->result('notes'), '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]', 'all ran');
};

scenario 'aborted reply has id and no logs' => sub {
    my $w = start_worker();
    is($w->call('fail', 'x', ep(0))->{t}, 'err', 'an error');
    # "note" logs when it runs; aborted, it neither runs nor logs
    for my $id ('123', '0', '18446744073709551617', '"str-id"') {
        $w->send(qq({"t":"call","id":$id,"m":"note","a":["no"],"ep":0}));
        same_json($w->recv, qq({"t": "aborted", "id": $id}), "id $id");
    }
    my $reply = $w->call('note', 'yes', ep(1));
    is($reply->{r}, 'yes', 'ep 1 runs');
    same_json([ map { [ $_->{msg}, $_->{f} ] } @{ $reply->{logs} } ], '[["noted", {"x": "yes"}]]', 'with its logs');
    same_json($w->result('notes'), '["yes"]', 'only it ran');
};

scenario 'call without ep runs after an error' => sub {
    my $w = start_worker();
    my ($msgs, $replies) = pipeline($w, [ 'fail', ['boom'], 0 ], [ 'note', ['no ep'] ], [ 'note', ['ep 0'], 0 ], [ 'note', [undef] ]);
    is(types($replies), 'err ok aborted ok', 'replies');
    same_json($w->result('notes'), '["no ep", null]', 'the calls without ep ran');
    same_json($w->result(undef, 1), '[1]', 'function-style, no ep');
};

scenario 'malformed ep is ignored' => sub {
    my $w = start_worker();
    is($w->call('fail', 'boom', ep(0))->{t}, 'err', 'an error');
    for my $ep ('"0"', '-1', '0.5', 'true', 'null', '[0]', '{"n":0}') {
        $w->send(qq({"t":"call","id":50,"m":"note","a":[1],"ep":$ep}));
        is($w->recv->{t}, 'ok', "ep $ep: runs");
    }
    is($w->call('note', 2, ep(0))->{t}, 'aborted', 'ep 0 is still aborted');
    is($w->call('note', 3, ep(Math::BigInt->new(2)**70))->{t}, 'ok', 'a huge ep runs');
};

scenario 'done resets errs' => sub {
    my $w = start_worker();
    my ($msgs, $replies) = pipeline($w, [ 'fail', ['a'], 0 ], [ 'fail', ['b'], 1 ], [ 'note', [1], 1 ]);
    is(types($replies), 'err err aborted', 'two errors');
    $w->send({ t => 'done' });
    is($w->result('counts')->{dones}, 1, 'the hook ran');
    is($w->result('note', 'next checkout', ep(0)), 'next checkout', 'the next checkout starts from 0');
    # the new checkout counts from 0 again: one error, then ep 0 is aborted, ep 1 runs
    ($msgs, $replies) = pipeline($w, [ 'fail', ['c'], 0 ], [ 'note', [2], 0 ], [ 'note', [3], 1 ]);
    is(types($replies), 'err aborted ok', 'counted again');
    $w->send({ t => 'done' });
    same_json($w->result('note', 4, ep(0)), '4', 'and reset again');
    same_json($w->result('notes'), '["next checkout", 3, 4]', 'what ran');
};

scenario 'errs counts only err replies' => sub {
    my $w = start_worker();
    my ($msgs, $replies) = pipeline(
        $w,
        [ 'fail', ['one'], 0 ],        # err: errs 1
        [ 'note', ['a'], 0 ],          # aborted (not counted)
        [ 'note', ['b'], 0 ],          # aborted (not counted)
        [ 'note', ['c'], 1 ],          # ok: with aborted counted, this would be aborted
        [ 'no_such_method', [], 1 ],   # err (unknown method): errs 2
        [ 'note', ['d'], 1 ],          # aborted
        [ 'nan', [], 2 ],              # err (result is not JSON): errs 3
        [ 'note', ['e'], 2 ],          # aborted
        [ 'note', ['f'] ],             # ok: no ep
        [ 'note', ['g'], 3 ],          # ok
        [ 'note', ['h'], 4 ],          # ok: ep above errs runs too
    );
    is(types($replies), 'err aborted aborted ok err aborted err aborted ok ok ok', 'replies');
    is($replies->[4]{e}{type}, 'UnknownMethod', 'unknown method');
    like($replies->[6]{e}{msg}, qr/JSON/, 'not JSON');
    same_json($w->result('notes'), '["c", "f", "g", "h"]', 'what ran');
};

scenario 'cancel of an aborted call' => sub {
    # call 3 is cancelled while queued, then aborted; a later call that reuses its id must
    # not inherit the cancel
    my $w = start_worker();
    my $first = $w->call_msg('wait_cancel', 60000, ep(0));
    $w->send($first);
    $w->send($w->call_msg('fail', 'boom', ep(0)));
    my $queued = $w->call_msg('wait_cancel', 60000, ep(0));
    $w->send($queued);
    $w->wait_stderr(sprintf 'waiting for cancel %d', $first->{id});
    $w->send({ t => 'cancel', id => $queued->{id} });
    $w->send({ t => 'cancel', id => $first->{id} });
    is($w->recv->{r}, 'cancelled', 'the running call');
    is($w->recv->{t}, 'err', 'the error');
    same_json($w->recv, qq({"t": "aborted", "id": $queued->{id}}), 'the cancelled call is aborted');
    $w->send({ %$queued, a => [200], ep => 1 });
    same_json($w->recv, qq({"t": "ok", "id": $queued->{id}, "r": "not cancelled"}), 'its id, reused, is not cancelled');
};

scenario 'end of input with pipelined calls behind an error' => sub {
    my $w = start_worker();
    my @msgs = ($w->call_msg('fail', 'boom', ep(0)), $w->call_msg('note', 1, ep(0)), $w->call_msg('note', 2, ep(1)));
    $w->send($_) for @msgs;
    is($w->close_input, 0, 'exit status 0');
    is(join(' ', map { $w->recv->{t} } @msgs), 'err aborted ok', 'every call answered');
    ok($w->assert_no_more_output, 'nothing more');
};

done_testing;
