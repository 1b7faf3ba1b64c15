# The POD of every public module is well formed and has a NAME; internal modules
# (Taskd::Worker::JSON*) have none.
use strict;
use warnings;
use FindBin;
use File::Find ();
use Pod::Checker ();
use Test::More;

my @files;
File::Find::find({ no_chdir => 1, wanted => sub { push @files, $_ if /\.pm\z/ } }, "$FindBin::Bin/../lib");
for my $f (sort @files) {
    my $out = '';
    open my $fh, '>', \$out or die $!;
    my $checker = Pod::Checker->new(-warnings => 2);
    $checker->parse_from_file($f, $fh);
    (my $name = $f) =~ s{\A.*?/lib/}{};
    if ($name =~ m{/JSON}) {
        is($checker->num_errors, -1, "$name: internal, no POD");
        next;
    }
    is($checker->num_errors, 0, "$name: POD without errors") or diag($out);
    is($checker->num_warnings, 0, "$name: POD without warnings") or diag($out);
    my $pod = do { local (@ARGV, $/) = ($f); <> };
    like($pod, qr/^=head1 NAME\n\n[\w:]+ - \S/m, "$name: NAME");
}

done_testing;
