# The modules load, agree on their version, and check what Taskd::Worker->new is given;
# the JSON codec keeps numbers exact.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../lib";
use File::Find ();
use Test::More;
use WorkerProc qw(canon decode_json);

my @modules = qw(Taskd::Worker Taskd::Worker::Context Taskd::Worker::Log Taskd::Worker::Timer
                 Taskd::Worker::Cancelled Taskd::Worker::JSON Taskd::Worker::JSON::Raw);

for my $m (@modules) {
    use_ok($m) or BAIL_OUT("$m does not load");
    no strict 'refs';
    is(${"${m}::VERSION"}, $Taskd::Worker::VERSION, "$m has the distribution's version");
}

# one package per file: every .pm under lib is one of @modules, and declares only it
my %known = map { $_ => 1 } @modules;
File::Find::find({ no_chdir => 1, wanted => sub {
    return unless /\.pm\z/;
    (my $m = $File::Find::name) =~ s{\A.*?/lib/}{};
    $m =~ s{/}{::}g;
    $m =~ s{\.pm\z}{};
    ok($known{$m}, "$m is tested here");
    open my $fh, '<', $_ or die "$_: $!";
    my @packages = grep { defined } map { /^package\s+([\w:]+)/ ? $1 : undef } <$fh>;
    is("@packages", $m, "$m: one package in its file");
} }, "$FindBin::Bin/../lib");

subtest 'new checks its options' => sub {
    my $w = Taskd::Worker->new(methods => { a => sub { 1 } }, default => sub { 2 });
    isa_ok($w, 'Taskd::Worker');
    isa_ok($w->log, 'Taskd::Worker::Log');
    for my $bad (
        [ [ bogus => 1 ],              qr/unknown option 'bogus'/ ],
        [ [ methods => [] ],           qr/methods must be a hash of subs/ ],
        [ [ methods => { a => 1 } ],   qr/method 'a' is not a sub/ ],
        [ [ setup => 'x' ],            qr/setup must be a sub/ ],
        [ [ checkout_done => {} ],     qr/checkout_done must be a sub/ ],
        [ [ default => [] ],           qr/default must be a sub/ ],
    ) {
        my ($args, $re) = @$bad;
        ok(!eval { Taskd::Worker->new(@$args); 1 }, "refused: @$args");
        like($@, $re, 'says why');
    }
};

subtest 'Cancelled' => sub {
    my $c = Taskd::Worker::Cancelled->new(7);
    is($c->id, 7, 'id');
    is("$c", 'call 7 was cancelled', 'stringifies to its message');
};

subtest 'JSON numbers stay exact' => sub {
    for my $json ('12345678901234567890', '-18446744073709551617', '9007199254740993', '0.1', '1.0',
                  '0.30000000000000004', '5e-324', '1e+300', '3.141592653589793', '-2.25', '0', '[1, 2.5, {"a": 1e-7}]') {
        my $line = Taskd::Worker::JSON::encode(Taskd::Worker::JSON::out(Taskd::Worker::JSON::decode("[$json]")));
        is(canon(decode_json($line)), canon(decode_json("[$json]")), "$json round-trips");
    }
    for my $bad (9**9**9, -9**9**9, 9**9**9 - 9**9**9) {
        ok(!eval { Taskd::Worker::JSON::out($bad); 1 }, "$bad is refused");
        like($@, qr/NaN or Infinity/, 'says why');
    }
    like(Taskd::Worker::JSON::encode(Taskd::Worker::JSON::out(0.1 + 0.2)), qr/\A0\.30000000000000004\n\z/, 'a float: the fewest digits that give it back');
};

done_testing;
