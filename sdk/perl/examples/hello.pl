#!/usr/bin/perl
# Hello-world taskd worker. Config: command: ["perl", "sdk/perl/examples/hello.pl"]
use strict; use warnings;
use FindBin; use lib "$FindBin::Bin/../lib";   # the SDK beside this file; installed, it needs no lib
use Taskd::Worker;

Taskd::Worker->new(methods => {
    hello => sub {
        my ($ctx, $name) = @_;
        $name //= 'world';
        $ctx->log->info('greeting', name => $name);
        return "hello, $name";
    },
})->run;
