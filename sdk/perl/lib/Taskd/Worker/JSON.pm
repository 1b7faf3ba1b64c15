package Taskd::Worker::JSON;

# The JSON codec of Taskd::Worker, exact for numbers both ways. Internal to Taskd::Worker:
# not part of the API.
#
# Numbers: integers of 19+ digits become Math::BigInt (exact); a decimal number becomes a
# plain Perl number when that is exact to 15 digits, else a Math::BigFloat (exact). On the
# way out, Math::BigInt/BigFloat are written exactly and plain floats with the fewest
# digits (up to 17) that give back the same double. NaN and infinities are errors.

use strict;
use warnings;

use B ();
use JSON::PP ();
use Math::BigFloat ();
use Math::BigInt ();
use Scalar::Util ();
use Taskd::Worker::JSON::Raw ();

our $VERSION = '1.000';

use constant MAX_DEPTH => 512;

# Shared by the packages of Taskd::Worker; not safe to reconfigure.
our $JSON = JSON::PP->new->utf8->canonical->allow_bignum->convert_blessed->max_depth(MAX_DEPTH);

my $BIGINT_TAG = "\0taskd-bigint:";

# One protocol line (bytes, without its newline or with) to a Perl value.
sub decode {
    my ($line) = @_;
    if ($line =~ /\d{19}/) {
        # JSON::PP turns some integers of 20 digits into doubles: mark them first.
        $line =~ s{("(?:[^"\\]++|\\.)*+")|(?<![\w.+-])(-?\d{19,})(?![\d.eE])}
                  {defined $1 ? $1 : qq{"\\u0000taskd-bigint:$2"}}ge;
    }
    return _in($JSON->decode($line));
}

sub _in {
    my ($v) = @_;
    my $r = ref $v;
    if (!$r) {
        if (defined $v && index($v, $BIGINT_TAG) == 0 && $v =~ /\A\0taskd-bigint:(-?\d+)\z/) {
            return Math::BigInt->new($1);
        }
        return $v;
    }
    if ($r eq 'ARRAY') { $_ = _in($_) for @$v; return $v }
    if ($r eq 'HASH')  { $_ = _in($_) for values %$v; return $v }
    if ($r eq 'Math::BigFloat') {
        my $s = sprintf('%.15g', $v->numify);
        if ($s =~ /[.e]/ && $s !~ /n/i && Math::BigFloat->new($s) == $v) {
            return 0 + $s;
        }
        return $v;
    }
    return $v;
}

# A copy of $v that encode writes exactly (see above); dies for NaN, infinities and
# structures nested deeper than MAX_DEPTH.
sub out {
    my ($v, $depth) = @_;
    $depth ||= 0;
    die "result nested deeper than " . MAX_DEPTH . " levels\n" if $depth > MAX_DEPTH;
    my $r = ref $v;
    if (!$r) {
        return $v unless defined $v;
        my $flags = B::svref_2object(\$v)->FLAGS;
        if (($flags & B::SVp_NOK()) && !($flags & (B::SVp_IOK() | B::SVp_POK()))) {
            die "cannot send NaN or Infinity as JSON\n" if $v != $v || $v * 0 != 0;
            return int($v) if $v == int($v) && abs($v) < 9e18;    # 2**60 is an integer
            for my $p (15, 16, 17) {
                my $s = sprintf("%.${p}g", $v);
                next unless $s == $v;
                return $v if $p == 15;
                return Taskd::Worker::JSON::Raw->new($s);
            }
        }
        return $v;
    }
    if ($r eq 'ARRAY') { return [ map { out($_, $depth + 1) } @$v ] }
    if ($r eq 'HASH')  { return { map { ($_ => out($v->{$_}, $depth + 1)) } keys %$v } }
    if (Scalar::Util::blessed($v)) {
        if ($v->isa('Math::BigInt') || $v->isa('Math::BigFloat')) {
            return $v if $v->isa('Taskd::Worker::JSON::Raw');
            die "cannot send NaN or Infinity as JSON\n" if $v->is_nan || $v->is_inf;
            return $v if $v->isa('Math::BigInt');
            my $s = $v->bstr;
            $s = $v->bsstr if $s !~ /\./ || length($s) > 40;    # keep it a float, and short
            return Taskd::Worker::JSON::Raw->new($s);
        }
    }
    return $v;
}

# One protocol line: bytes, with its newline.
sub encode {
    my ($msg) = @_;
    return $JSON->encode($msg) . "\n";
}

1;
