# MANIFEST (what make dist packs) lists exactly the distribution's files.
use strict;
use warnings;
use FindBin;
use File::Find ();
use Test::More;

my $dist = "$FindBin::Bin/..";
open my $fh, '<', "$dist/MANIFEST" or BAIL_OUT("MANIFEST: $!");
my @listed = grep { length } map { s/\s.*//sr } grep { !/^#/ } <$fh>;
my %listed = map { $_ => 1 } @listed;
ok(-f "$dist/$_", "$_ exists") for @listed;

my @files = ('Makefile.PL', 'README', 'MANIFEST');
File::Find::find({ no_chdir => 1, wanted => sub {
    push @files, substr($_, length($dist) + 1) if -f $_;
} }, map { "$dist/$_" } qw(examples lib t));
ok($listed{$_}, "MANIFEST lists $_") for sort @files;

done_testing;
