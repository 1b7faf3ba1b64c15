package SDKWorker;

# For the tests: starts the Perl SDK's test worker, the conformance suite's
# internal/conformance/workers/perl_sdk.pl (it serves the methods the scenarios in t/ use;
# see that file), and checks its ready. Outside a taskd source tree there is no such
# worker: plan() then skips the test file, saying so.

use strict;
use warnings;

use Exporter 'import';
use Cwd ();
use File::Spec ();
use FindBin ();
use Test::More ();
use WorkerProc qw(canon);

our @EXPORT_OK = qw(start_worker);

# the repository root: t/../../..
my $ROOT = Cwd::abs_path(File::Spec->catdir($FindBin::Bin, File::Spec->updir, File::Spec->updir, File::Spec->updir));
our $WORKER = File::Spec->catfile($ROOT, qw(internal conformance workers perl_sdk.pl));

# Call before the tests: skips them all outside a taskd source tree.
sub plan {
    Test::More::plan(skip_all => "not in a taskd source tree (no $WORKER): the protocol scenarios need "
                                . "the conformance worker; t/examples.t tests the SDK without it")
        unless -f $WORKER;
}

# start_worker(%env): a WorkerProc running the test worker, its ready read and checked.
sub start_worker {
    my (%env) = @_;
    my $w = WorkerProc->new([ $^X, $WORKER ], %env);
    my $ready = $w->recv;
    die "expected ready, got " . canon($ready) . "\n"
        unless canon($ready) eq '{"pipeline":true,"t":s:"ready","v":i:1}';
    return $w;
}

1;
