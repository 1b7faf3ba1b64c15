#!/usr/bin/perl
# The Perl SDK's test worker. It serves the method contract of package conformance
# (internal/conformance/doc.go), base and SDK parts, for the conformance suite, and the
# extra methods of python_sdk.py (beside this file; see its docstring) but stdlog and
# stdlog_levels, plus die(msg), a plain string die, for the SDK's own tests (sdk/perl/t,
# which run it directly).
#
# taskd starts workers with a clean environment (no PERL5LIB), so the SDK is found relative
# to this file: the one of this source tree, even if another is installed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../../../sdk/perl/lib";
use Math::BigInt ();
use POSIX ();
use Time::HiRes ();
use Taskd::Worker;

package ConformanceError {
    sub new     { my ($class, $msg) = @_; return bless { msg => $msg }, $class }
    sub message { $_[0]{msg} }
}

my %counts = (setups => 0, dones => 0);
my @notes;    # arguments of "note" calls: shows which calls ran
my $unfinished;

sub echo { my ($ctx, @args) = @_; return \@args }

Taskd::Worker->new(
    setup => sub {
        my ($w) = @_;
        $counts{setups}++;
        print "print during setup\n";    # must not reach the protocol
        $w->log->info('setup finished', pid => $$);
    },
    checkout_done => sub { $counts{dones}++ },
    default       => \&echo,
    methods       => {
        echo  => \&echo,
        fail  => sub { my ($ctx, $msg) = @_; die ConformanceError->new($msg) },
        pid   => sub { return $$ },
        sleep => sub { my ($ctx, $ms) = @_; Time::HiRes::sleep($ms / 1000); return $ms },
        spin  => sub { 1 while 1 },
        bye   => sub { my ($ctx) = @_; $ctx->bye('asked to'); return 'bye' },
        log   => sub { my ($ctx, $msg) = @_; $ctx->log->info($msg); return JSON::PP::true },
        counts => sub { return {%counts} },
        print => sub {
            my ($ctx, $s) = @_;
            binmode STDOUT, ':encoding(UTF-8)';
            print "$s\n";
            printf "%s (printf)\n", $s;
            STDOUT->flush;
            my $bytes = "$s (fd 1)\n";
            utf8::encode($bytes);
            POSIX::write(1, $bytes, length $bytes);
            system('echo', "$s (child)");
            return 'printed';
        },
        logs => sub {
            my ($ctx) = @_;
            $ctx->log->info('one', n => 1);
            {
                my $t = $ctx->log->timer('t');
                $ctx->log->warn('two', big => Math::BigInt->new(2)**70);
            }
            $ctx->log->error('three');
            return 'logged';
        },
        wait_cancel => sub {
            my ($ctx, $ms) = @_;
            print STDERR "waiting for cancel " . $ctx->id . "\n";
            my $deadline = Time::HiRes::time() + $ms / 1000;
            while (Time::HiRes::time() < $deadline) {
                return 'cancelled' if $ctx->cancelled;
                Time::HiRes::sleep(0.001);
            }
            return 'not cancelled';
        },
        cancel_cleanup => sub {
            my ($ctx, $path) = @_;
            Time::HiRes::sleep(0.001) until $ctx->cancelled;
            open(my $fh, '>', $path) or die "cannot write $path: $!";
            print {$fh} "cleaned up";
            close($fh) or die "cannot write $path: $!";
            return 'cancelled';
        },
        big => sub { my ($ctx, $n) = @_; return 'y' x $n },
        len => sub { my ($ctx, $s) = @_; return length $s },

        # for the SDK's own tests (sdk/perl/t)
        timers => sub {
            my ($ctx) = @_;
            my $t = $ctx->log->timer('a', x => 1);
            $t->stop;
            $t->stop;    # records once
            $unfinished = $ctx->log->timer('b');    # still running when the call is answered
            return 'timed';
        },
        note => sub {
            my ($ctx, $x) = @_;
            $ctx->log->info('noted', x => $x);
            push @notes, $x;
            return $x;
        },
        notes      => sub { return [@notes] },
        nan        => sub { return 9**9**9 - 9**9**9 },    # not JSON: the SDK answers err
        read_stdin => sub { my $n = sysread(STDIN, my $buf, 100); return $n },
        die        => sub { my ($ctx, $msg) = @_; die "$msg\n" },
    },
)->run;
