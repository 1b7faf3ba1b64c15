package Taskd::Worker;

# Write taskd workers in Perl (worker protocol v1). Core modules only; Perl 5.20 or newer.
# Documentation: the POD at the end of this file, and docs/writing-workers.md.

use strict;
use warnings;

use Carp ();
use Fcntl ();
use IO::Handle ();
use JSON::PP ();
use POSIX ();
use Scalar::Util ();
use B ();
use Taskd::Worker::Cancelled ();
use Taskd::Worker::Context ();
use Taskd::Worker::JSON ();
use Taskd::Worker::Log ();

our $VERSION = '1.000';

use constant PROTOCOL_VERSION          => 1;
use constant DEFAULT_MAX_MESSAGE_BYTES => 16 << 20;    # taskd's default max_message_bytes

sub new {
    my ($class, %opt) = @_;
    my %known = map { $_ => 1 } qw(methods default setup checkout_done);
    for my $k (sort keys %opt) {
        Carp::croak("Taskd::Worker->new: unknown option '$k'") unless $known{$k};
    }
    my $methods = $opt{methods} || {};
    Carp::croak("Taskd::Worker->new: methods must be a hash of subs") unless ref $methods eq 'HASH';
    for my $m (sort keys %$methods) {
        Carp::croak("Taskd::Worker->new: method '$m' is not a sub") unless ref $methods->{$m} eq 'CODE';
    }
    for my $k (qw(default setup checkout_done)) {
        Carp::croak("Taskd::Worker->new: $k must be a sub")
            if defined $opt{$k} && ref $opt{$k} ne 'CODE';
    }
    my $self = bless {
        methods       => {%$methods},
        default       => $opt{default},
        setup         => $opt{setup},
        checkout_done => $opt{checkout_done},
        log           => Taskd::Worker::Log->_new(0),
        inbuf         => '',
        scan          => 0,
        queue         => [],
        pending       => {},
        precancelled  => {},
        current       => undef,
        eof           => 0,
        running       => 0,
        bye           => undef,
        errs          => 0,    # err replies sent since the last "done" (pipelining)
        max           => DEFAULT_MAX_MESSAGE_BYTES,    # longest line, either way, without "\n"
        read_error    => undef,    # why reading stopped before end of input, if it did
    }, $class;
    return $self;
}

# The worker-wide logger: records go to stderr only (use it in setup and hooks).
sub log { $_[0]{log} }

# Asks taskd to retire this worker after the current checkout. During setup it is sent
# after "ready"; during a call, just before that call's reply, in the same write;
# otherwise at once.
sub bye {
    my ($self, $msg) = @_;
    $msg = '' unless defined $msg;
    if (!$self->{running} || $self->{current}) {
        $self->{bye} = "$msg";
        return;
    }
    $self->_send({ t => 'bye', msg => "$msg" });
}

sub run {
    my ($self) = @_;
    Carp::croak("Taskd::Worker->run called twice") if $self->{ran}++;
    $self->{max} = _max_message_bytes();
    $self->_protect_stdio;
    if (my $setup = $self->{setup}) {
        if (!eval { $setup->($self); 1 }) {
            my $e = $@;
            _stderr("taskd worker setup failed: " . _err_text($e));
            exit 1;
        }
    }
    $self->{running} = 1;
    $self->_send({ t => 'ready', v => PROTOCOL_VERSION, pipeline => JSON::PP::true });
    $self->_flush_bye;
    while (1) {
        my $msg = $self->_next_message;
        if (!$msg) {    # end of input, and the messages read before it handled
            return if !defined $self->{read_error};
            _stderr("taskd worker: $self->{read_error}");
            exit 1;
        }
        my $t = defined $msg->{t} ? $msg->{t} : '';
        if ($t eq 'call') {
            $self->_call($msg);
        } elsif ($t eq 'done') {
            $self->_done;
        }
        # "cancel" is handled when read; unknown types are ignored
    }
}

sub _flush_bye {
    my ($self) = @_;
    return unless defined $self->{bye};
    my $msg = delete $self->{bye};
    $self->_send({ t => 'bye', msg => $msg });
}

sub _call {
    my ($self, $msg) = @_;
    my $id  = $msg->{id};
    my $key = _key($id);
    if (--$self->{pending}{$key} <= 0) { delete $self->{pending}{$key} }
    my $cancelled = delete($self->{precancelled}{$key}) || $self->{eof};
    my $ep = _ep($msg->{ep});
    if (defined $ep && $ep < $self->{errs}) {
        # Made before the application saw an error that this checkout's earlier calls got:
        # queued behind that error, so it must not run. Not an error itself.
        $self->_send({ t => 'aborted', id => $id });
        return;
    }
    my $method = defined $msg->{m} ? "$msg->{m}" : '';
    my $args   = defined $msg->{a} ? $msg->{a} : [];
    my $ctx    = Taskd::Worker::Context->_new($self, $id, $method);
    $ctx->{cancelled} = 1 if $cancelled;
    $self->{current} = $ctx;

    my ($f, $refused);
    if (ref $args ne 'ARRAY') {
        $refused = [ 'TypeError', '"a" must be a JSON array' ];
    } elsif ($method ne '') {
        $f = $self->{methods}{$method} or $refused = [ 'UnknownMethod', qq{unknown method "$method"} ];
    } else {
        $f = $self->{default} or $refused = [ 'UnknownMethod', 'this worker has no handler for function-style calls' ];
    }
    my ($ok, $result, $trace) = (0);
    if ($f) {
        local $@;
        $ok = eval {
            local $SIG{__DIE__} = sub { $trace = Carp::longmess('') };
            $result = $f->($ctx, @$args);
            1;
        };
        $result = $@ unless $ok;
    }
    $self->{current} = undef;
    my $logs = $ctx->{log}->_take;
    $ctx = undef;

    my $reply = $ok       ? { t => 'ok', id => $id }
              : $refused ? { t => 'err', id => $id, e => { type => $refused->[0], msg => $refused->[1], trace => '' } }
              :            { t => 'err', id => $id, e => _error_payload($result, $trace) };
    $reply->{logs} = $logs if @$logs;
    my $line;
    if ($ok) {
        $line = eval { _encode({ %$reply, r => Taskd::Worker::JSON::out($result) }) };
        if (!defined $line) {
            (my $why = _err_text($@)) =~ s/ at \S+ line \d+\.?\z//;
            $reply = { t => 'err', id => $id,
                       e => { msg => "the result cannot be sent as JSON: $why", type => 'TypeError', trace => '' } };
            $reply->{logs} = $logs if @$logs;
        }
    }
    $line = _encode($reply) unless defined $line;
    if (length($line) - 1 > $self->{max}) {
        my $what = $method ne '' ? qq{method "$method"} : 'function-style call';
        $reply = { t => 'err', id => $id, e => { type => 'ReplyTooLarge', trace => '',
            msg => sprintf('the reply of %s is %d bytes, more than max_message_bytes (%d): return less, or raise max_message_bytes',
                           $what, length($line) - 1, $self->{max}) } };
        $line = _encode($reply);
    }
    $self->{errs}++ if $reply->{t} eq 'err';
    # bye goes first, in the same write: taskd then knows it when the reply ends the
    # checkout (a one-shot checkout is released as soon as the reply is read).
    $line = _encode({ t => 'bye', msg => delete $self->{bye} }) . $line if defined $self->{bye};
    $self->_write($line);
}

# The call's "ep" if it is a non-negative integer, else undef: an absent or malformed ep
# means the call runs, as without pipelining. (A JSON string "3" is not an integer.)
sub _ep {
    my ($ep) = @_;
    return undef unless defined $ep;
    if (ref $ep) {    # 19 digits or more: Math::BigInt
        return ref $ep eq 'Math::BigInt' && !$ep->is_neg ? $ep : undef;
    }
    return undef unless B::svref_2object(\$ep)->FLAGS & B::SVp_IOK();
    return $ep =~ /\A[0-9]+\z/ ? $ep : undef;
}

# The line length limit from TASKD_MAX_MESSAGE_BYTES: a number of bytes, optionally with a
# KiB, MiB or GiB suffix as in taskd's config. Anything else ends the worker (status 1).
sub _max_message_bytes {
    my $v = $ENV{TASKD_MAX_MESSAGE_BYTES};
    return DEFAULT_MAX_MESSAGE_BYTES if !defined $v || $v eq '';
    my %unit = (KiB => 1 << 10, MiB => 1 << 20, GiB => 1 << 30);
    if ($v =~ /\A\s*([0-9]+)\s*(KiB|MiB|GiB)?\s*\z/ && $1 > 0) {
        return $1 * ($2 ? $unit{$2} : 1);
    }
    _stderr("taskd worker: TASKD_MAX_MESSAGE_BYTES='$v': want a positive size such as 16777216 or 16MiB");
    exit 1;
}

sub _done {
    my ($self) = @_;
    if (my $f = $self->{checkout_done}) {
        if (!eval { $f->($self); 1 }) {
            _stderr("taskd worker: checkout_done hook failed; exiting so that this worker serves no "
                  . "further checkout: " . _err_text($@));
            exit 1;
        }
    }
    $self->{errs} = 0;    # the next checkout starts with no errors
}

sub _error_payload {
    my ($e, $trace) = @_;
    my ($type, $msg);
    if (Scalar::Util::blessed($e)) {
        $type = ref $e;
        if    ($e->can('message'))             { $msg = $e->message }
        elsif ($e->can('msg'))                 { $msg = $e->msg }
        else                                   { $msg = "$e" }
        if ($e->can('trace')) {
            my $t = eval { $e->trace };
            $trace = "$t" if defined $t && "$t" ne '';
        }
    } elsif (ref $e) {
        $type = 'die';
        $msg  = eval { $Taskd::Worker::JSON::JSON->encode([ Taskd::Worker::JSON::out($e) ]) } || "$e";
    } else {
        $type = 'die';
        $msg  = defined $e ? "$e" : 'died';
    }
    $msg = '' unless defined $msg;
    $msg = "$msg";
    chomp $msg;
    $msg = $type if $msg eq '';
    if (!defined $trace) {
        $trace = '';
    } elsif ($trace =~ /\A at /) {
        # from Carp::longmess: say what died, and leave out this module's frames
        (my $what = $msg) =~ s/ at \S+ line \d+\.?\z//;
        $trace = join '', $what, grep { !m{^\s*(?:Taskd::Worker::|eval \{\.\.\.\} called at \S*Taskd/Worker\.pm )} }
            split /^/m, $trace;
    }
    return { msg => $msg, type => $type, trace => "$trace" };
}

sub _err_text {
    my ($e) = @_;
    my $s = defined $e ? "$e" : 'died';
    chomp $s;
    return $s;
}

# ---- protocol I/O -------------------------------------------------------------------------

sub _protect_stdio {
    my ($self) = @_;
    STDOUT->flush;
    STDERR->flush;
    my $in_fd  = POSIX::dup(0);
    my $out_fd = POSIX::dup(1);
    defined $in_fd && defined $out_fd or die "Taskd::Worker: cannot duplicate stdin/stdout: $!\n";
    open(my $in,  '<&=', $in_fd)  or die "Taskd::Worker: fdopen $in_fd: $!\n";
    open(my $out, '>&=', $out_fd) or die "Taskd::Worker: fdopen $out_fd: $!\n";
    for my $fh ($in, $out) {
        binmode $fh;
        my $flags = fcntl($fh, Fcntl::F_GETFD(), 0);
        fcntl($fh, Fcntl::F_SETFD(), ($flags || 0) | Fcntl::FD_CLOEXEC());  # children don't get them
    }
    POSIX::dup2(2, 1) or die "Taskd::Worker: dup2(2, 1): $!\n";
    if (open(my $null, '<', '/dev/null')) {
        POSIX::dup2(fileno($null), 0);
        close $null;
    }
    STDOUT->autoflush(1);
    $self->{in}  = $in;
    $self->{out} = $out;
}

sub _send {
    my ($self, $msg) = @_;
    $self->_write(_encode($msg));
}

sub _encode { Taskd::Worker::JSON::encode(@_) }

sub _write {
    my ($self, $bytes) = @_;
    my $off = 0;
    my $len = length $bytes;
    while ($off < $len) {
        my $n = syswrite($self->{out}, $bytes, $len - $off, $off);
        if (!defined $n) {
            next if $!{EINTR};
            die "Taskd::Worker: cannot write to taskd: $!\n";
        }
        $off += $n;
    }
}

# Reads what stdin has; with $block, waits for at least one read. Complete lines are
# decoded: cancels are applied at once, other messages queued in order.
sub _read_more {
    my ($self, $block) = @_;
    return 0 if $self->{eof};
    my $fh = $self->{in};
    if (!$block) {
        my $rin = '';
        vec($rin, fileno($fh), 1) = 1;
        my $n = select(my $rout = $rin, undef, undef, 0);
        return 0 unless $n && $n > 0;
    }
    my $got = sysread($fh, $self->{inbuf}, 1 << 16, length $self->{inbuf});
    if (!defined $got) {
        return 0 if $!{EINTR} || $!{EAGAIN};
        return $self->_stop_reading("reading from taskd: $!");
    }
    return $self->_stop_reading(undef) if $got == 0;
    while ((my $i = index($self->{inbuf}, "\n", $self->{scan})) >= 0) {
        return $self->_stop_reading_too_long if $i > $self->{max};
        my $line = substr($self->{inbuf}, 0, $i + 1, '');
        $self->{scan} = 0;
        $self->_ingest($line);
    }
    return $self->_stop_reading_too_long if length $self->{inbuf} > $self->{max};
    $self->{scan} = length $self->{inbuf};
    return 1;
}

# Input ends (at EOF, or early with a reason): the running call counts as cancelled, and
# the messages already queued are still handled.
sub _stop_reading {
    my ($self, $why) = @_;
    $self->{eof}        = 1;
    $self->{read_error} = $why;
    $self->{inbuf}      = '';
    $self->{current}{cancelled} = 1 if $self->{current};
    return 0;
}

sub _stop_reading_too_long {
    my ($self) = @_;
    return $self->_stop_reading("taskd sent a line longer than $self->{max} bytes; "
          . "TASKD_MAX_MESSAGE_BYTES must match taskd's max_message_bytes");
}

sub _ingest {
    my ($self, $line) = @_;
    return if $line !~ /\S/;
    my $msg = eval { Taskd::Worker::JSON::decode($line) };
    if (ref $msg ne 'HASH') {
        _stderr("taskd worker: ignoring a stdin line that is not a JSON object");
        return;
    }
    my $t = defined $msg->{t} ? $msg->{t} : '';
    if ($t eq 'cancel') {
        my $key = _key($msg->{id});
        if ($self->{current} && _key($self->{current}{id}) eq $key) {
            $self->{current}{cancelled} = 1;
        } elsif ($self->{pending}{$key}) {
            $self->{precancelled}{$key} = 1;
        }
        return;
    }
    $self->{pending}{ _key($msg->{id}) }++ if $t eq 'call';
    push @{ $self->{queue} }, $msg;
}

sub _next_message {
    my ($self) = @_;
    while (!@{ $self->{queue} } && !$self->{eof}) {
        $self->_read_more(1);
    }
    return shift @{ $self->{queue} };
}

# Polls stdin without blocking (for $ctx->cancelled).
sub _poll {
    my ($self) = @_;
    1 while $self->_read_more(0);
}

sub _key {
    my ($id) = @_;
    return defined $id ? (ref $id ? $Taskd::Worker::JSON::JSON->encode([$id]) : "$id") : '';
}

sub _stderr { Taskd::Worker::Log::_stderr(@_) }

1;

__END__

=head1 NAME

Taskd::Worker - write taskd workers in Perl (worker protocol v1)

=head1 SYNOPSIS

    use Taskd::Worker;

    Taskd::Worker->new(
        methods => {
            hello => sub {
                my ($ctx, $name) = @_;
                $ctx->log->info('greeting', name => $name);
                return "hello, $name";
            },
        },
    )->run;

=head1 DESCRIPTION

taskd starts the worker and talks to it over stdin/stdout, one JSON object per line
(docs/worker-protocol.md). This module speaks the protocol; you supply subs. Core modules
only; Perl 5.20 or newer.

The distribution holds L<Taskd::Worker> (this page), L<Taskd::Worker::Context> (what a
handler gets), L<Taskd::Worker::Log> and L<Taskd::Worker::Timer> (per-call logs) and
L<Taskd::Worker::Cancelled> (an exception). C<Taskd::Worker::JSON> is internal.

=head1 INSTALLATION

From a taskd checkout, into the perl your workers run with:

    cd sdk/perl && perl Makefile.PL && make && make test && make install
    cpanm ./sdk/perl                 # the same, with App::cpanminus

Or without installing: put F<sdk/perl/lib> on C<@INC> (C<use lib>, or C<PERL5LIB> in the
interface's C<env>: taskd gives a worker no other environment).

=head2 Taskd::Worker->new(%options)

=over

=item methods => { name => sub { my ($ctx, @args) = @_; ... } }

Handlers by method name. A handler gets a context object and the call's positional
arguments, and returns the result (one scalar: any JSON value; use an array ref for a list).
C<die> becomes an C<err> reply and the worker stays usable: a blessed exception gives its
class as C<type> (and its C<message> method, if any, as C<msg>); a plain C<die> gives type
C<die>. The trace is C<Carp::longmess> taken where the exception was thrown (or the
object's C<trace>).

=item default => sub { my ($ctx, @args) = @_; ... }

Handler for function-style calls (no method name).

=item setup => sub { my ($worker) = @_; ... }

Runs once, before the worker reports ready. If it dies, the message goes to stderr and the
worker exits with status 1.

=item checkout_done => sub { my ($worker) = @_; ... }

Runs each time a checkout is released (e.g. roll back an open transaction). If it dies, the
worker exits with status 1: its state is unknown.

=back

=head2 $worker->run

Moves the protocol to private duplicates of fds 0 and 1 (close-on-exec), points fd 1 (and
STDOUT) at stderr and fd 0 (and STDIN) at /dev/null, runs setup, sends ready, then serves
calls one at a time, in order, until stdin ends. Returns at end of input.

C<run> is meant to be the last thing your program does: where the worker cannot go on (an
invalid C<TASKD_MAX_MESSAGE_BYTES>, a C<setup> or C<checkout_done> sub that died, a line
from taskd longer than the limit, a failed read) it says why on stderr and B<exits the
process with status 1>.

The worker announces pipelining (C<"pipeline":true> on ready; see "Pipelining (optional)" in
docs/worker-protocol.md): taskd may then send several calls of a checkout at once, each with
C<ep>, the number of errors of this checkout the application had seen when it made the
call. A call whose C<ep> is lower than the number of C<err> replies sent since the last
C<done> is queued behind an error and is not run: it is answered C<{"t":"aborted"}> and its
handler is never called. Nothing is needed in your code for this.

Lines are bounded by C<TASKD_MAX_MESSAGE_BYTES> (taskd sets it from C<max_message_bytes>;
16 MiB when unset): a longer line from taskd ends the worker with status 1, and a reply that
would be longer is replaced by an C<err> of type C<ReplyTooLarge>, as in the Go SDK.

=head2 $worker->log, $worker->bye($msg)

The worker-wide logger (stderr only). C<bye> asks taskd to retire the worker after the
current checkout (sent after ready when called in setup, with the reply during a call).

=head2 The context: $ctx->log, $ctx->cancelled, $ctx->check_cancelled, $ctx->bye($msg)

A handler's first argument is a L<Taskd::Worker::Context>:

C<< $ctx->log->info($msg, key => $value, ...) >> (also C<debug>, C<warn>, C<error>,
C<< log($lvl, ...) >>; fields may also be one hash ref) records a log record that is returned
to the caller with the reply and written to stderr (L<Taskd::Worker::Log>).

C<< my $t = $ctx->log->timer('name', %fields) >> returns a guard; when it is destroyed (or
C<< $t->stop >>) the duration is recorded: a record of level info, msg C<name>, fields plus
C<timer> (the name) and C<ms> (the duration in milliseconds, a float), made when the timer
stops, so it follows the records logged while it ran. A timer still running when the call
is answered is recorded then, with C<unfinished> true (L<Taskd::Worker::Timer>).

C<< $ctx->cancelled >> is true once taskd has sent C<cancel> for this call (or stdin ended).
It checks stdin without blocking; messages read meanwhile are kept in order.
C<< $ctx->check_cancelled >> dies with a L<Taskd::Worker::Cancelled> object instead.

C<< $ctx->bye($msg) >> asks to be retired; sent with this call's reply, just before it.
C<< $ctx->id >> and C<< $ctx->method >> say which call this is.

=head2 Numbers

Integers of 19 or more digits arrive as C<Math::BigInt>; decimal numbers that a Perl number
holds exactly (to 15 digits) arrive as plain numbers, others as C<Math::BigFloat>. Return
them as they are and they go back exactly. NaN and infinities cannot be sent.

=head1 SEE ALSO

docs/writing-workers.md and docs/worker-protocol.md in the taskd repository.

=cut
