# The hello-world example (examples/hello.pl, in this distribution) answers its one method.
# It needs nothing outside the distribution.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use Test::More;
use WorkerProc qw(scenario same_json);

my $HELLO = "$FindBin::Bin/../examples/hello.pl";

scenario 'hello' => sub {
    my $w = WorkerProc->new([ $^X, $HELLO ]);
    same_json($w->recv, '{"t": "ready", "v": 1, "pipeline": true}', 'ready');
    my $reply = $w->call('hello', "\x{1F600}");
    is($reply->{r}, "hello, \x{1F600}", 'result');
    same_json([ map { [ @$_{qw(lvl msg f)} ] } @{ $reply->{logs} } ], '[["info", "greeting", {"name": "\ud83d\ude00"}]]', 'logs');
    is($w->result('hello'), 'hello, world', 'default argument');
    is($w->close_input, 0, 'exit status 0 at end of input');
};

done_testing;
