#!/usr/bin/perl
# perl-text: word counts over Unicode text, in a pool of Perl workers.
#
#   wordcount(text)  -> { word => count }         words lowercased (lc, Unicode rules)
#   top(text, n)     -> [ [word, count], ... ]    the n most frequent, ties alphabetical
#
# A word is a run of Unicode word characters (\w: letters of every script, marks, digits,
# connector punctuation), with inner apostrophes kept ("don't", "l'été").
use strict;
use warnings;
use feature qw(unicode_strings);
use FindBin;
use lib "$FindBin::RealBin/../../sdk/perl/lib";    # this checkout's SDK; installed, it needs no lib
use Taskd::Worker;

# An error the caller sees with type "TextError" (client.RemoteError.Type).
package TextError {
    sub new     { my ($class, $msg) = @_; return bless { msg => $msg }, $class }
    sub message { $_[0]{msg} }
}

sub counts {
    my ($text) = @_;
    die TextError->new('text must be a string') if !defined $text || ref $text;
    my %n;
    $n{ lc $1 }++ while $text =~ /(\w+(?:['\x{2019}]\w+)*)/g;
    return \%n;
}

Taskd::Worker->new(methods => {
    wordcount => sub {
        my ($ctx, $text) = @_;
        my $t = $ctx->log->timer('wordcount', chars => length($text // ''));
        return counts($text);
    },
    top => sub {
        my ($ctx, $text, $n) = @_;
        $n //= 10;
        die TextError->new('n must be a positive integer') unless $n =~ /\A[1-9][0-9]*\z/;
        my $c = counts($text);
        my @words = sort { $c->{$b} <=> $c->{$a} or $a cmp $b } keys %$c;
        splice @words, $n if @words > $n;
        return [ map { [ $_, $c->{$_} ] } @words ];
    },
})->run;
