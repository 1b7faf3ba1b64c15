package WorkerProc;

# For the tests: runs a worker process the way taskd does and speaks worker protocol v1 to it.
#
# Every stdout line must be a protocol message (a JSON object with a known "t"): a stray
# line fails the test, since the SDKs promise that user output never reaches the protocol.
# Waits have time limits, used only as upper bounds. Failures die with what the worker
# wrote on stderr; run scenarios with scenario() so that a death fails one subtest only.
# A WorkerProc is not safe for concurrent use; dropping it kills and reaps the process.

use strict;
use warnings;

use Carp ();
use Errno ();
use Exporter 'import';
use Fcntl ();
use IPC::Open3 ();
use JSON::PP ();
use Math::BigFloat ();
use Math::BigInt ();
use POSIX ();
use Symbol ();
use Test::More ();
use Time::HiRes ();
use B ();

our @EXPORT_OK = qw(scenario decode_json encode_json canon same_json ep $TIMEOUT);

our $TIMEOUT = 20;    # seconds; an upper bound, never a wait

$SIG{PIPE} = 'IGNORE';    # a write to a worker that exited fails with EPIPE instead

my %KNOWN = map { $_ => 1 } qw(ready ok err aborted bye);

# Decoding keeps the kind of each number: decimals become Math::BigFloat, integers too
# long for a Perl integer Math::BigInt, other integers plain numbers (see canon).
my $DECODER = JSON::PP->new->utf8->allow_bignum;
my $ENCODER = JSON::PP->new->utf8->canonical->allow_bignum->allow_blessed->convert_blessed;
my $ASCII   = JSON::PP->new->ascii->allow_nonref;

# Runs $code as a subtest named $name; if it dies, that subtest fails with the message.
sub scenario {
    my ($name, $code) = @_;
    Test::More::subtest($name => sub {
        my $ok = eval { $code->(); 1 };
        Test::More::fail("$name died: $@") unless $ok;
    });
}

sub decode_json { return $DECODER->decode($_[0]) }

# A message as one protocol line (bytes, without its newline), as send writes it.
sub encode_json { return $ENCODER->encode($_[0]) }

# A canonical text of a decoded JSON value that shows which numbers are integers (i:) and
# which floats (f:), so that two values compare equal only if they have the same JSON
# shape and the same exact value.
sub canon {
    my ($v) = @_;
    return 'null' unless defined $v;
    my $r = ref $v;
    if ($r eq 'JSON::PP::Boolean') { return $v ? 'true' : 'false' }
    if ($r eq 'ARRAY')             { return '[' . join(',', map { canon($_) } @$v) . ']' }
    if ($r eq 'HASH') {
        return '{' . join(',', map { $ASCII->encode("$_") . ':' . canon($v->{$_}) } sort keys %$v) . '}';
    }
    if ($r && $v->isa('Math::BigFloat')) { return 'f:' . $v->copy->bnorm->bsstr }
    if ($r && $v->isa('Math::BigInt'))   { return 'i:' . $v->bstr }
    Carp::croak("canon: not a decoded JSON value: $r") if $r;
    my $flags = B::svref_2object(\$v)->FLAGS;
    if (($flags & (B::SVp_IOK() | B::SVp_NOK())) && !($flags & B::SVp_POK())) {
        return 'i:' . Math::BigInt->new("$v")->bstr;    # decimals decode to Math::BigFloat
    }
    return 's:' . $ASCII->encode("$v");
}

# same_json($got, $want_json_text, $name): $got (decoded) is the JSON value $want_json_text.
sub same_json {
    my ($got, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::is(canon($got), canon(decode_json($want)), $name);
}

# The environment taskd gives a worker: a few standard variables plus TASKD_*, and %extra
# (an interface's env).
sub worker_env {
    my (%extra) = @_;
    my %env = map { ($_ => $ENV{$_}) } grep { defined $ENV{$_} } qw(PATH HOME LANG LC_ALL LC_CTYPE TZ TMPDIR);
    %env = (%env, %extra, TASKD_INTERFACE => 'test', TASKD_WORKER_ID => 'test-1', TASKD_PROTOCOL => '1');
    $env{TASKD_MAX_MESSAGE_BYTES} //= 16 << 20;
    return \%env;
}

# WorkerProc->new(\@argv, %env): starts the worker with pipes for stdin, stdout and stderr.
sub new {
    my ($class, $argv, %env) = @_;
    my ($in, $out, $err) = (Symbol::gensym(), Symbol::gensym(), Symbol::gensym());
    my $pid;
    {
        local %ENV = %{ worker_env(%env) };
        $pid = IPC::Open3::open3($in, $out, $err, @$argv);
    }
    for my $fh ($in, $out, $err) {
        binmode $fh;
        my $flags = fcntl($fh, Fcntl::F_GETFL(), 0) or die "fcntl: $!";
        fcntl($fh, Fcntl::F_SETFL(), $flags | Fcntl::O_NONBLOCK()) or die "fcntl: $!";
    }
    return bless {
        pid        => $pid,
        in         => $in,
        fds        => { out => $out, err => $err },
        buf        => { out => '', err => '' },
        eof        => { out => 0, err => 0 },
        lines      => [],    # complete stdout lines not yet received
        stderr     => [],    # stderr lines so far (bytes)
        next_id    => 1,
        status     => undef,
    }, $class;
}

sub pid { $_[0]{pid} }

# Reads what stdout and stderr have, waiting up to $wait seconds for something (and, with
# $wfd, for that descriptor to take writes). Returns whether $wfd can take writes.
sub _pump {
    my ($self, $wait, $wfd) = @_;
    my ($rin, $win) = ('', '');
    for my $k (qw(out err)) {
        vec($rin, fileno($self->{fds}{$k}), 1) = 1 unless $self->{eof}{$k};
    }
    vec($win, fileno($wfd), 1) = 1 if $wfd;
    if ($rin =~ /[^\0]/ || $wfd) {
        my $n = select(my $rout = $rin, my $wout = $win, undef, $wait < 0 ? 0 : $wait);
        return 0 if $n <= 0;
        for my $k (qw(out err)) {
            next if $self->{eof}{$k} || !vec($rout, fileno($self->{fds}{$k}), 1);
            my $got = sysread($self->{fds}{$k}, $self->{buf}{$k}, 1 << 16, length $self->{buf}{$k});
            if (!defined $got) {
                next if $!{EAGAIN} || $!{EINTR};
                die "reading the worker's std$k: $!";
            }
            if ($got == 0) {
                $self->{eof}{$k} = 1;
                next;
            }
            while ((my $i = index($self->{buf}{$k}, "\n")) >= 0) {
                my $line = substr($self->{buf}{$k}, 0, $i + 1, '');
                push @{ $k eq 'out' ? $self->{lines} : $self->{stderr} }, $line;
            }
        }
        return $wfd && vec($wout, fileno($wfd), 1);
    }
    Time::HiRes::sleep($wait > 0.01 ? 0.01 : $wait) if $wait > 0;    # nothing left to read
    return 0;
}

# Sends a message: a hash ref (encoded here) or one line of bytes as they are.
sub send {
    my ($self, $msg) = @_;
    my $line = (ref $msg ? $ENCODER->encode($msg) : $msg) . "\n";
    my $deadline = Time::HiRes::time() + $TIMEOUT;
    my $off = 0;
    while ($off < length $line) {
        my $n = syswrite($self->{in}, $line, length($line) - $off, $off);
        if (defined $n) {
            $off += $n;
            next;
        }
        die "writing to the worker: $!\n" . $self->stderr_text unless $!{EAGAIN} || $!{EINTR};
        die "the worker took no input for ${TIMEOUT}s; stderr:\n" . $self->stderr_text
            if Time::HiRes::time() > $deadline;
        $self->_pump($deadline - Time::HiRes::time(), $self->{in});    # read while it cannot take more
    }
    return;
}

# The next stdout message, decoded. Dies on stray output, end of output or timeout.
sub recv {
    my ($self, $timeout) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // $TIMEOUT);
    while (!@{ $self->{lines} }) {
        die "the worker closed stdout; stderr:\n" . $self->stderr_text if $self->{eof}{out};
        my $left = $deadline - Time::HiRes::time();
        die "no message from the worker within ${TIMEOUT}s; stderr:\n" . $self->stderr_text if $left <= 0;
        $self->_pump($left);
    }
    my $line = shift @{ $self->{lines} };
    my $msg = eval { $DECODER->decode($line) };
    die "stray stdout line: " . substr($line, 0, 200) . "\n" unless ref $msg eq 'HASH';
    die "bad message: " . substr($line, 0, 200) . "\n" unless defined $msg->{t} && $KNOWN{ $msg->{t} };
    return $msg;
}

# A call message (method undef: function-style); ep is left out unless given.
sub call_msg {
    my ($self, $method, @args) = @_;
    my %opt = (@args && ref $args[-1] eq 'WorkerProc::Opt') ? %{ pop @args } : ();
    my $msg = { t => 'call', id => $self->{next_id}++, a => \@args };
    $msg->{m}  = $method  if defined $method;
    $msg->{ep} = $opt{ep} if exists $opt{ep};
    return $msg;
}

# ep($n): a last argument of call_msg, call or result that sets the call's "ep".
sub ep { return bless { ep => $_[0] }, 'WorkerProc::Opt' }

# Sends a call and returns its reply (ok, err or aborted).
sub call {
    my ($self, @call) = @_;
    my $msg = $self->call_msg(@call);
    $self->send($msg);
    my $reply = $self->recv;
    die sprintf("reply %s for call %d\n", $ENCODER->encode($reply), $msg->{id})
        unless canon($reply->{id}) eq canon($msg->{id});
    return $reply;
}

# The result of an ok reply; dies on any other.
sub result {
    my ($self, @call) = @_;
    my $reply = $self->call(@call);
    die "expected ok, got " . $ENCODER->encode($reply) . "\n" unless $reply->{t} eq 'ok';
    return $reply->{r};
}

# Waits until a stderr line contains $text (characters; compared as UTF-8).
sub wait_stderr {
    my ($self, $text) = @_;
    utf8::encode($text);
    my $deadline = Time::HiRes::time() + $TIMEOUT;
    my $seen = 0;
    while (1) {
        for my $i ($seen .. $#{ $self->{stderr} }) {
            return 1 if index($self->{stderr}[$i], $text) >= 0;
        }
        $seen = @{ $self->{stderr} };
        if ($self->{eof}{err}) {
            return 1 if index($self->{buf}{err}, $text) >= 0;    # an unterminated last line
            die "stderr closed before saying '$text'; it said:\n" . $self->stderr_text;
        }
        my $left = $deadline - Time::HiRes::time();
        die "stderr never said '$text'; it said:\n" . $self->stderr_text if $left <= 0;
        $self->_pump($left);
    }
}

sub stderr_text {
    my ($self) = @_;
    return join('', @{ $self->{stderr} }, $self->{buf}{err});
}

# Waits for the worker to exit (reading its output meanwhile) and returns its exit status
# (128 + the signal if a signal ended it).
sub wait_exit {
    my ($self) = @_;
    return $self->{status} if defined $self->{status};
    my $deadline = Time::HiRes::time() + $TIMEOUT;
    while (1) {
        my $r = waitpid($self->{pid}, POSIX::WNOHANG());
        if ($r == $self->{pid}) {
            $self->{status} = POSIX::WIFSIGNALED($?) ? 128 + POSIX::WTERMSIG($?) : POSIX::WEXITSTATUS($?);
            return $self->{status};
        }
        die "waitpid: $!" if $r < 0;
        my $left = $deadline - Time::HiRes::time();
        die "the worker did not exit within ${TIMEOUT}s; stderr:\n" . $self->stderr_text if $left <= 0;
        $self->_pump($left > 0.05 ? 0.05 : $left);
    }
}

# Closes stdin (end of input) and returns the exit status.
sub close_input {
    my ($self) = @_;
    if ($self->{in}) {
        close $self->{in};
        $self->{in} = undef;
    }
    return $self->wait_exit;
}

# After the worker exited: its stdout must end without further messages. Dies otherwise.
sub assert_no_more_output {
    my ($self) = @_;
    my $deadline = Time::HiRes::time() + $TIMEOUT;
    while (!$self->{eof}{out} && !@{ $self->{lines} }) {
        my $left = $deadline - Time::HiRes::time();
        die "stdout did not end within ${TIMEOUT}s" if $left <= 0;
        $self->_pump($left);
    }
    die "unexpected stdout after end of input: " . substr($self->{lines}[0], 0, 200) . "\n" if @{ $self->{lines} };
    die "unexpected unterminated stdout: " . substr($self->{buf}{out}, 0, 200) . "\n" if length $self->{buf}{out};
    return 1;
}

sub kill_worker {
    my ($self) = @_;
    if (!defined $self->{status}) {
        kill 'KILL', $self->{pid};
        waitpid($self->{pid}, 0);
        $self->{status} = -1;
    }
    close $self->{in} if $self->{in};
    $self->{in} = undef;
    close $_ for values %{ $self->{fds} };
    $self->{fds} = {};
}

sub DESTROY {
    my ($self) = @_;
    local ($@, $!, $?);
    $self->kill_worker if $self->{pid};
}

1;
