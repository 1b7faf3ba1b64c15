# The Perl SDK against worker protocol v1, without the daemon: the scenarios of
# sdk/python/tests/sdk_cases.py (change both together), against the conformance suite's
# Perl worker.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use WorkerProc qw(scenario canon same_json);
use SDKWorker qw(start_worker);

SDKWorker::plan();

my $MiB = 1 << 20;

# Values that must round-trip exactly through every worker (JSON text, as sent).
my $ROUND_TRIP = <<'JSON';
[1, -7, 0, 9007199254740993, 9223372036854775807, -9223372036854775808, 18446744073709551617,
 -18446744073709551617, 12345678901234567890123456789,
 0.1, 1.5, -2.25, 0.30000000000000004, 3.141592653589793, 1e+300, 5e-324, 1.0,
 null, true, false, [], {}, "", "plain", "h\u00e9llo w\u00f6rld", "\u4f60\u597d", "héllo wörld 你好",
 "\ud83d\ude00 \ud834\udd1e", "quote \" backslash \\ newline \n tab \t nul \u0000",
 {"nested": {"list": [1, [2, [3, {"x": null}]]], "\ud83d\ude00": "key"}}]
JSON
utf8::encode($ROUND_TRIP);    # the file is UTF-8 source: send bytes
$ROUND_TRIP =~ s/\n//g;

scenario 'echo round trip' => sub {
    my $w = start_worker();
    $w->send(qq({"t":"call","id":1,"m":"echo","a":$ROUND_TRIP}));
    my $reply = $w->recv;
    is($reply->{t}, 'ok', 'ok');
    same_json($reply->{r}, $ROUND_TRIP, 'every value comes back exactly, integers as integers and floats as floats');
    same_json($w->result('echo'), '[]', 'no arguments');
};

scenario 'function-style call' => sub {
    # the default handler echoes, like "echo"
    my $w = start_worker();
    same_json($w->result(undef, 1, 'two'), '[1, "two"]', 'no method name');
    same_json($w->result('', 3), '[3]', 'empty method name');
};

scenario 'error keeps worker usable' => sub {
    my $w = start_worker();
    my $reply = $w->call('fail', "it broke \x{1F600}");
    is($reply->{t}, 'err', 'err');
    my $e = $reply->{e};
    is($e->{type}, 'ConformanceError', 'type: the exception class');
    like($e->{msg}, qr/it broke \x{1F600}/, 'msg');
    like($e->{trace}, qr/it broke/, 'trace says what died');
    like($e->{trace}, qr/perl_sdk\.pl/, "trace points at the handler's file");
    same_json($w->result('echo', 1), '[1]', 'still serving');
};

scenario 'unknown method' => sub {
    my $w = start_worker();
    my $reply = $w->call('no_such_method');
    is($reply->{t}, 'err', 'err');
    is($reply->{e}{type}, 'UnknownMethod', 'type');
    like($reply->{e}{msg}, qr/no_such_method/, 'msg names the method');
    same_json($w->result('echo', 2), '[2]', 'still serving');
};

scenario 'plain die' => sub {
    my $w = start_worker();
    my $reply = $w->call('die', 'plain string');
    is($reply->{t}, 'err', 'err');
    is($reply->{e}{type}, 'die', 'type die');
    is($reply->{e}{msg}, 'plain string', 'msg: the string, without its newline');
    like($reply->{e}{trace}, qr/perl_sdk\.pl line/, 'trace');
};

scenario 'print goes to stderr' => sub {
    my $w = start_worker();
    $w->wait_stderr('print during setup');
    is($w->result('print', "hello from print \x{e9}"), 'printed', 'printed');
    $w->wait_stderr("hello from print \x{e9}");
    # recv fails on any stray stdout line; the next message must be this reply
    same_json($w->result('echo', 'after'), '["after"]', 'nothing reached stdout');
};

scenario 'stdin is not the protocol' => sub {
    my $w = start_worker();
    same_json($w->result('read_stdin'), '0', 'fd 0 reads /dev/null');
    same_json($w->result('echo', 'still here'), '["still here"]', 'still serving');
};

scenario 'logs and timer in order' => sub {
    my $w = start_worker();
    my $reply = $w->call('logs');
    is($reply->{r}, 'logged', 'result');
    my @logs = @{ $reply->{logs} };
    # a timer's record is made when it stops: after the records logged inside it
    is(join(' ', map { "$_->{lvl}:$_->{msg}" } @logs), 'info:one warn:two info:t error:three', 'records in order');
    same_json($logs[0]{f}, '{"n": 1}', 'fields');
    same_json($logs[1]{f}, '{"big": 1180591620717411303424}', 'a big integer field stays exact');
    my $timer = $logs[2]{f};
    is(join(',', sort keys %$timer), 'ms,timer', 'timer fields');
    is($timer->{timer}, 't', 'timer name');
    isa_ok($timer->{ms}, 'Math::BigFloat', 'ms: a float in every SDK, even when whole;');
    ok($timer->{ms} >= 0, 'ms >= 0');
    my @ts = map { $_->{ts} } @logs;
    ok((!grep { $ts[$_ - 1] > $ts[$_] } 1 .. $#ts), 'time stamps in order');
    ok((!grep { canon($_) !~ /^[if]:/ || $_ <= 1.6e9 } @ts), 'time stamps are Unix times');
    $w->wait_stderr('three');    # records are also written to stderr
    ok(!exists $w->call('echo')->{logs}, 'no logs on a call that made none');
};

scenario 'timer fields and unfinished timer' => sub {
    my $w = start_worker();
    my $reply = $w->call('timers');
    is($reply->{r}, 'timed', 'result');
    my @logs = @{ $reply->{logs} };
    is(join(' ', map { "$_->{lvl}:$_->{msg}" } @logs), 'info:a info:b', 'one record per timer');
    my ($a, $b) = map { $_->{f} } @logs;
    is(join(',', sort keys %$a), 'ms,timer,x', 'a: its fields');
    is($a->{timer}, 'a', 'a: name');
    same_json($a->{x}, '1', 'a: x');
    is(join(',', sort keys %$b), 'ms,timer,unfinished', 'b: unfinished');
    is($b->{timer}, 'b', 'b: name');
    ok($b->{unfinished} && ref $b->{unfinished} eq 'JSON::PP::Boolean', 'b: unfinished is true');
    isa_ok($_, 'Math::BigFloat', 'ms') for $a->{ms}, $b->{ms};
};

scenario 'cancel running call' => sub {
    my $w = start_worker();
    my $msg = $w->call_msg('wait_cancel', 60000);
    $w->send($msg);
    $w->wait_stderr(sprintf 'waiting for cancel %d', $msg->{id});
    $w->send({ t => 'cancel', id => $msg->{id} });
    my $reply = $w->recv;
    is($reply->{id}, $msg->{id}, 'id');
    is($reply->{r}, 'cancelled', 'the handler saw the cancel');
};

scenario 'cancel pipelined call' => sub {
    my $w = start_worker();
    my $first  = $w->call_msg('wait_cancel', 60000);
    my $second = $w->call_msg('wait_cancel', 60000);
    $w->send($first);
    $w->send($second);
    $w->wait_stderr(sprintf 'waiting for cancel %d', $first->{id});
    $w->send({ t => 'cancel', id => $second->{id} });    # cancelled before it starts
    $w->send({ t => 'cancel', id => 999 });              # unknown id: ignored
    $w->send({ t => 'cancel', id => $first->{id} });
    my ($r1, $r2) = ($w->recv, $w->recv);
    is("$r1->{id} $r1->{r}", "$first->{id} cancelled", 'running call');
    is("$r2->{id} $r2->{r}", "$second->{id} cancelled", 'queued call');
};

scenario 'pipelined calls answered in order' => sub {
    my $w = start_worker();
    my @msgs = map { $w->call_msg('echo', $_) } 0 .. 19;
    $w->send($_) for @msgs;
    for my $m (@msgs) {
        my $reply = $w->recv;
        is(canon([ @$reply{qw(t id r)} ]), canon([ 'ok', @$m{qw(id a)} ]), "call $m->{a}[0]");
    }
};

scenario 'setup once and checkout done' => sub {
    my $w = start_worker();
    same_json($w->result('counts'), '{"setups": 1, "dones": 0}', 'setup ran once');
    $w->send({ t => 'done' });
    same_json($w->result('counts'), '{"setups": 1, "dones": 1}', 'done runs the hook');
    $w->send({ t => 'done' }) for 1 .. 2;
    same_json($w->result('counts'), '{"setups": 1, "dones": 3}', 'each done');
};

scenario 'unknown messages ignored' => sub {
    my $w = start_worker();
    $w->send({ t => 'future-thing', x => 1 });
    $w->send({ t => 'call', id => 77, m => 'echo', a => [1], extra => { y => 2 } });
    same_json($w->recv, '{"t": "ok", "id": 77, "r": [1]}', 'unknown type and field');
};

scenario 'bye' => sub {
    # bye comes just before the reply, so that taskd knows it when the reply ends the
    # checkout
    my $w = start_worker();
    my $msg = $w->call_msg('bye');
    $w->send($msg);
    same_json($w->recv, '{"t": "bye", "msg": "asked to"}', 'bye first');
    my $reply = $w->recv;
    is("$reply->{t} $reply->{id} $reply->{r}", "ok $msg->{id} bye", 'then the reply');
    same_json($w->result('echo', 'still serving'), '["still serving"]', 'still serving');
};

scenario 'one MiB argument and result' => sub {
    my $w = start_worker();
    my $arg = "a\x{e9}\x{1F600}" x int($MiB / 3);
    is($w->result('len', $arg), length $arg, 'length in characters');
    ok($w->result('big', $MiB) eq 'y' x $MiB, '1 MiB result');
    my $echo = $w->result('echo', $arg);
    ok(@$echo == 1 && $echo->[0] eq $arg, '1 MiB of UTF-8 back');
};

scenario 'end of input: exit status 0' => sub {
    my $w = start_worker();
    same_json($w->result('echo', 1), '[1]', 'served');
    is($w->close_input, 0, 'exit status');
    ok($w->assert_no_more_output, 'nothing more on stdout');
};

scenario 'end of input while calls queued' => sub {
    my $w = start_worker();
    my $msg = $w->call_msg('wait_cancel', 60000);
    $w->send($msg);
    $w->wait_stderr(sprintf 'waiting for cancel %d', $msg->{id});
    is($w->close_input, 0, 'end of input counts as cancel, then exit');
    my $reply = $w->recv;
    is("$reply->{id} $reply->{r}", "$msg->{id} cancelled", 'the running call was answered');
};

done_testing;
