package Taskd::Worker::Timer;

use strict;
use warnings;

use Time::HiRes ();
use Taskd::Worker::JSON::Raw ();

our $VERSION = '1.000';

# Made by Taskd::Worker::Log->timer.
sub _new {
    my ($class, $log, $name, $fields) = @_;
    return bless { log => $log, name => $name, f => $fields, start => Time::HiRes::time() }, $class;
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    my $ms = (Time::HiRes::time() - $self->{start}) * 1000;
    my %f = %{ $self->{f} };
    $f{timer} = $self->{name};
    # always written with a fraction, so that "ms" is a float in every SDK
    $f{ms} = Taskd::Worker::JSON::Raw->new(sprintf('%.3f', $ms < 0 ? 0 : $ms));
    $self->{log}->_add('info', $self->{name}, \%f);
    return;
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $!, $?);
    $self->stop;
}

1;

__END__

=head1 NAME

Taskd::Worker::Timer - how long a step of a call took, as a log record

=head1 SYNOPSIS

    {
        my $t = $ctx->log->timer('query', table => 'users');
        ...
    }    # recorded here

    my $t = $ctx->log->timer('fetch');
    ...
    $t->stop;

=head1 DESCRIPTION

Made by C<< $log->timer >> (L<Taskd::Worker::Log>). When it stops, one record is made:
level C<info>, message the timer's name, fields the timer's fields plus C<timer> (the name)
and C<ms> (the duration in milliseconds, a float with microsecond resolution): the timer
format every taskd SDK shares (docs/worker-protocol.md).

=head1 METHODS

=head2 stop

Stops the timer and records it. Later calls, and the destruction of the object, do
nothing.

=head1 SEE ALSO

L<Taskd::Worker::Log>

=cut
