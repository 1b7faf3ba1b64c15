#!/usr/bin/perl
# The Perl SDK's test worker: the same methods as sdk/python/tests/sdk_worker.py.
# Run by sdk/python/tests/test_perl_sdk.py.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/..";
use Taskd::Worker;
use Time::HiRes ();

package TestError { sub new { bless { msg => $_[1] }, $_[0] } sub message { $_[0]{msg} } }

my %state = (setups => 0, dones => 0);
my $unfinished;
my @notes;    # arguments of "note" calls: shows which calls ran

Taskd::Worker->new(
    setup => sub {
        my ($w) = @_;
        $state{setups}++;
        print "print during setup\n";    # must not reach the protocol
        $w->log->info('setup finished', pid => $$);
    },
    checkout_done => sub { $state{dones}++ },
    default       => sub { my ($ctx, @args) = @_; return { default => \@args } },
    methods       => {
        echo => sub { my ($ctx, @args) = @_; return \@args },
        fail => sub { my ($ctx, $msg) = @_; die TestError->new($msg) },
        die  => sub { my ($ctx, $msg) = @_; die "$msg\n" },
        print => sub {
            my ($ctx, $s) = @_;
            binmode STDOUT, ':encoding(UTF-8)';
            print "$s\n";
            printf "%s\n", $s;
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
        timers => sub {
            my ($ctx) = @_;
            my $t = $ctx->log->timer('a', x => 1);
            $t->stop;
            $t->stop;    # records once
            $unfinished = $ctx->log->timer('b');    # still running when the call is answered
            return 'timed';
        },
        wait_cancel => sub {
            my ($ctx, $max_ms) = @_;
            print STDERR "waiting for cancel " . $ctx->id . "\n";
            my $deadline = Time::HiRes::time() + $max_ms / 1000;
            while (Time::HiRes::time() < $deadline) {
                return 'cancelled' if $ctx->cancelled;
                Time::HiRes::sleep(0.001);
            }
            return 'not cancelled';
        },
        note => sub {
            my ($ctx, $x) = @_;
            $ctx->log->info('noted', x => $x);
            push @notes, $x;
            return $x;
        },
        notes  => sub { return [@notes] },
        nan    => sub { return 9**9**9 - 9**9**9 },    # not JSON: the SDK answers err
        counts => sub { return {%state} },
        bye    => sub { my ($ctx) = @_; $ctx->bye('please'); return 'bye' },
        pid    => sub { return $$ },
        len    => sub { my ($ctx, $s) = @_; return length $s },
        big    => sub { my ($ctx, $n) = @_; return 'y' x $n },
        read_stdin => sub { my $n = sysread(STDIN, my $buf, 100); return $n },
    },
)->run;
