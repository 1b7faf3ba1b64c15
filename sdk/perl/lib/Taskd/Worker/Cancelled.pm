package Taskd::Worker::Cancelled;

use strict;
use warnings;

our $VERSION = '1.000';

use overload '""' => sub { $_[0]->message }, fallback => 1;

sub new     { my ($class, $id) = @_; return bless { id => $id }, $class }
sub id      { $_[0]{id} }
sub message { "call " . (defined $_[0]{id} ? $_[0]{id} : '') . " was cancelled" }

1;

__END__

=head1 NAME

Taskd::Worker::Cancelled - the exception of $ctx->check_cancelled

=head1 SYNOPSIS

    for my $row (@rows) {
        $ctx->check_cancelled;    # dies with a Taskd::Worker::Cancelled once cancelled
        ...
    }

=head1 DESCRIPTION

C<< $ctx->check_cancelled >> (L<Taskd::Worker::Context>) dies with this object once taskd
has cancelled the call. Uncaught, it becomes the call's C<err> reply, of type
C<Taskd::Worker::Cancelled>.

=head1 METHODS

=head2 id

The id of the call that was cancelled.

=head2 message

C<call ID was cancelled>; also what the object stringifies to.

=cut
