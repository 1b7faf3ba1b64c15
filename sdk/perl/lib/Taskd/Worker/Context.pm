package Taskd::Worker::Context;

use strict;
use warnings;

use Taskd::Worker::Cancelled ();
use Taskd::Worker::Log ();

our $VERSION = '1.000';

# Made by Taskd::Worker for each call it runs.
sub _new {
    my ($class, $worker, $id, $method) = @_;
    return bless {
        worker    => $worker,
        id        => $id,
        method    => $method,
        log       => Taskd::Worker::Log->_new(1),
        cancelled => 0,
    }, $class;
}

sub id     { $_[0]{id} }
sub method { $_[0]{method} }
sub log    { $_[0]{log} }
sub worker { $_[0]{worker} }

sub cancelled {
    my ($self) = @_;
    return 1 if $self->{cancelled};
    $self->{worker}->_poll if $self->{worker}{current} && $self->{worker}{current} == $self;
    return $self->{cancelled} ? 1 : 0;
}

sub check_cancelled {
    my ($self) = @_;
    die Taskd::Worker::Cancelled->new($self->{id}) if $self->cancelled;
    return;
}

sub bye {
    my ($self, $msg) = @_;
    $self->{worker}{bye} = defined $msg ? "$msg" : '';
    return;
}

1;

__END__

=head1 NAME

Taskd::Worker::Context - what a handler gets besides its arguments

=head1 SYNOPSIS

    methods => {
        report => sub {
            my ($ctx, @args) = @_;
            $ctx->log->info('start', call => $ctx->id);
            for my $part (@args) {
                return 'stopped early' if $ctx->cancelled;
                ...
            }
            $ctx->bye('grew too big') if too_big();
            return 'done';
        },
    }

=head1 DESCRIPTION

L<Taskd::Worker> makes one context object per call and passes it to the handler as its
first argument. Use it only while the call runs.

=head1 METHODS

=head2 log

The call's logger, a L<Taskd::Worker::Log>: its records travel back to the caller with
the reply, and are written to stderr.

=head2 cancelled

True once taskd has sent C<cancel> for this call (the caller gave up), or stdin has ended
(taskd is stopping the worker). It checks stdin without blocking each time it is called;
messages read meanwhile are kept for later, in order. Call it in long loops. Cancel is
advice: whatever the handler returns or dies with is still sent.

=head2 check_cancelled

Dies with a L<Taskd::Worker::Cancelled> object if C<cancelled> is true.

=head2 bye

    $ctx->bye($reason);

Asks taskd to retire this worker after the current checkout. The request is sent with
this call's reply, just before it; the worker keeps serving until taskd stops it.

=head2 id, method, worker

The call's id, its method name (C<''> for a function-style call), and the
L<Taskd::Worker>.

=cut
