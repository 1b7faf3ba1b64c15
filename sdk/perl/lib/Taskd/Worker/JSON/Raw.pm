package Taskd::Worker::JSON::Raw;

# A number that JSON::PP writes as it is: JSON::PP writes Math::BigInt and Math::BigFloat
# objects by stringifying them, and this one stringifies to the digits it was made with.
# Internal to Taskd::Worker: not part of the API.

use strict;
use warnings;

use Math::BigFloat ();

our $VERSION = '1.000';
our @ISA     = ('Math::BigFloat');

use overload '""' => sub { ${ $_[0] } }, fallback => 1;

sub new { my ($class, $s) = @_; return bless \$s, $class }

1;
