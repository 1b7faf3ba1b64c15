package Taskd::Worker::Log;

use strict;
use warnings;

use JSON::PP ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();
use Taskd::Worker::JSON ();
use Taskd::Worker::Timer ();

our $VERSION = '1.000';

# $collect: a call's logger keeps its records for the reply; the worker's only echoes them.
sub _new {
    my ($class, $collect) = @_;
    return bless { records => ($collect ? [] : undef), timers => [] }, $class;
}

sub debug { my ($self, $msg, @f) = @_; $self->_add('debug', $msg, _fields(@f)); return }
sub info  { my ($self, $msg, @f) = @_; $self->_add('info',  $msg, _fields(@f)); return }
sub warn  { my ($self, $msg, @f) = @_; $self->_add('warn',  $msg, _fields(@f)); return }
sub error { my ($self, $msg, @f) = @_; $self->_add('error', $msg, _fields(@f)); return }
sub log   { my ($self, $lvl, $msg, @f) = @_; $self->_add("$lvl", $msg, _fields(@f)); return }

# The record is made when the timer stops, so that it follows the records logged while it
# ran (the same in every SDK): level info, msg the name, fields + timer => name, ms => float.
sub timer {
    my ($self, $name, @fields) = @_;
    my $t = Taskd::Worker::Timer->_new($self, "$name", _fields(@fields));
    if ($self->{records}) {    # only a call's logger reports unfinished timers
        push @{ $self->{timers} }, $t;
        Scalar::Util::weaken($self->{timers}[-1]);
    }
    return $t;
}

sub _fields {
    my @f = @_;
    my %f = (@f == 1 && ref $f[0] eq 'HASH') ? %{ $f[0] } : @f % 2 ? (@f, undef) : @f;
    my %out;
    for my $k (keys %f) {
        my $v = eval {
            my $o = Taskd::Worker::JSON::out($f{$k});
            $Taskd::Worker::JSON::JSON->encode([$o]);
            $o;
        };
        $out{$k} = defined $v || !defined $f{$k} ? $v : "$f{$k}";
    }
    return \%out;
}

sub _add {
    my ($self, $lvl, $msg, $f) = @_;
    my $rec = { ts => Time::HiRes::time(), lvl => $lvl, msg => defined $msg ? "$msg" : '', f => $f };
    push @{ $self->{records} }, $rec if $self->{records};
    $self->_echo($rec);
    return $rec;
}

sub _echo {
    my ($self, $rec) = @_;
    my $line = "$rec->{lvl}: $rec->{msg}";
    if (%{ $rec->{f} }) {
        my $j = eval { $Taskd::Worker::JSON::JSON->encode($rec->{f}) };
        if (defined $j) { utf8::decode($j); $line .= " $j" }
    }
    _stderr($line);
}

# Returns the records so far and stops collecting (the call is being answered).
sub _take {
    my ($self) = @_;
    for my $t (grep { defined } @{ $self->{timers} }) {
        next if $t->{stopped};
        $t->{f}{unfinished} = JSON::PP::true;
        $t->stop;
    }
    $self->{timers} = [];
    my $recs = $self->{records} || [];
    $self->{records} = undef;
    return $recs;
}

# Writes one line to fd 2, whole, without Perl's buffering (also used by Taskd::Worker).
sub _stderr {
    my ($line) = @_;
    $line .= "\n" unless $line =~ /\n\z/;
    utf8::encode($line) if utf8::is_utf8($line);
    my $off = 0;
    while ($off < length $line) {
        my $n = POSIX::write(2, substr($line, $off), length($line) - $off);
        last unless defined $n && $n > 0;
        $off += $n;
    }
}

1;

__END__

=head1 NAME

Taskd::Worker::Log - log records that travel back to the caller with a call's reply

=head1 SYNOPSIS

    sub {
        my ($ctx, $sql, @bind) = @_;
        $ctx->log->info('query', sql => $sql);
        my $t = $ctx->log->timer('query', sql => $sql);    # recorded when $t goes away
        return $dbh->selectall_arrayref($sql, undef, @bind);
    }

=head1 DESCRIPTION

C<< $ctx->log >> (L<Taskd::Worker::Context>) is the logger of one call: its records are
returned to the caller with the reply (in the reply's C<logs>, see docs/worker-protocol.md),
in the order they were made, and each is also written to stderr as one line,
C<level: message {fields as JSON}>, which taskd logs. C<< $worker->log >>
(L<Taskd::Worker>) writes to stderr only: use it in setup and hooks.

A record made after its call has been answered goes to stderr only.

=head1 METHODS

=head2 debug, info, warn, error

    $log->info($msg, key => $value, ...);
    $log->info($msg, { key => $value });

Records C<$msg> at that level. The fields may be a list of pairs or one hash reference;
values should be JSON values (strings, numbers, C<JSON::PP::true>, array and hash
references, C<Math::BigInt>); anything else is sent as its string form.

=head2 log

    $log->log($level, $msg, %fields);

The same with the level as an argument (C<debug>, C<info>, C<warn> or C<error>).

=head2 timer

    my $t = $log->timer($name, %fields);

Starts a L<Taskd::Worker::Timer>: a guard whose duration is recorded when it is destroyed
(goes out of scope) or stopped (C<< $t->stop >>): a record of level C<info>, message
C<$name>, fields C<%fields> plus C<timer> (the name) and C<ms> (the duration in
milliseconds, a float). The record is made when the timer stops, so it follows the records
logged while it ran. A timer of a call's logger still running when the call is answered is
recorded then, with C<unfinished> true.

=head1 SEE ALSO

L<Taskd::Worker>, L<Taskd::Worker::Timer>

=cut
