# TASKD_MAX_MESSAGE_BYTES: the longest line either way, without its newline. The scenarios
# of sdk/python/tests/sdk_cases.py (change both together).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use WorkerProc qw(scenario encode_json ep same_json);
use SDKWorker qw(start_worker);

SDKWorker::plan();

scenario 'reply at and over the limit' => sub {
    my $w = start_worker(TASKD_MAX_MESSAGE_BYTES => '4KiB');
    my $envelope = length '{"t":"ok","id":1,"r":""}';    # the same length with keys in any order
    is(length $w->result('big', 4096 - $envelope), 4096 - $envelope, 'a reply of exactly 4 KiB');    # id 1
    my $reply = $w->call('big', 4096);    # id 2
    is($reply->{t}, 'err', 'one byte more: err');
    is($reply->{e}{type}, 'ReplyTooLarge', 'type');
    like($reply->{e}{msg}, qr/max_message_bytes \(4096\)/, 'msg names the limit');
    is($w->call('note', 'x', ep(0))->{t}, 'aborted', 'it counts as an error');
    same_json($w->result('echo', 'still serving'), '["still serving"]', 'still serving');
};

scenario 'line at and over the limit' => sub {
    my $w = start_worker(TASKD_MAX_MESSAGE_BYTES => '1024');
    my $msg = { t => 'call', id => 1, m => 'len', a => [''] };
    my $pad = 1024 - length encode_json($msg);
    $msg->{a} = [ 'x' x $pad ];
    is(length encode_json($msg), 1024, 'the line is 1024 bytes');
    $w->send($msg);    # exactly 1024 bytes and a newline: accepted
    same_json($w->recv, qq({"t": "ok", "id": 1, "r": $pad}), 'accepted');
    my $queued = $w->call_msg('echo', 'queued before');
    $w->send($queued);
    $w->send({ %$msg, id => 2, a => [ 'x' x 1025 ] });
    # what was read before the long line is answered; then the worker exits with status 1
    same_json($w->recv, qq({"t": "ok", "id": $queued->{id}, "r": ["queued before"]}), 'the call before it is answered');
    is($w->wait_exit, 1, 'exit status 1');
    ok($w->assert_no_more_output, 'nothing more on stdout');
    ok($w->wait_stderr('TASKD_MAX_MESSAGE_BYTES'), 'stderr says why');
};

scenario 'bad TASKD_MAX_MESSAGE_BYTES: exit before ready' => sub {
    my $w = WorkerProc->new([ $^X, $SDKWorker::WORKER ], TASKD_MAX_MESSAGE_BYTES => 'lots');
    is($w->wait_exit, 1, 'exit status 1');
    ok($w->assert_no_more_output, 'no ready');
    ok($w->wait_stderr('TASKD_MAX_MESSAGE_BYTES'), 'stderr says why');
};

done_testing;
