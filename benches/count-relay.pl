#!/usr/bin/perl
# count-relay.pl PORT FILE: listens on 127.0.0.1 (on a port the OS chooses, printed first),
# relays each connection to 127.0.0.1:PORT and, when it closes, appends to FILE the bytes the
# client sent through it: what an upload put on the wire, headers included, counted outside
# the program measured. Perl because Debian always has it (perl-base).
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;

my ($port, $file) = @ARGV;
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64)
    or die "listen: $!\n";
$| = 1;
print $listener->sockport, "\n";
$SIG{CHLD} = 'IGNORE';
while (1) {
    my $client = $listener->accept or next;
    my $pid = fork;
    die "fork: $!\n" unless defined $pid;
    if ($pid) {
        close $client;
        next;
    }
    close $listener;
    my $server = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port)
        or die "connect: $!\n";
    my $sent = relay($client, $server);
    open my $out, '>>', $file or die "$file: $!\n";
    print $out "$sent\n";
    close $out;
    exit 0;
}

# Both ways until either side closes; returns the bytes that came from the client.
sub relay {
    my ($client, $server) = @_;
    my $select = IO::Select->new($client, $server);
    my $sent = 0;
    while (1) {
        for my $from ($select->can_read) {
            my $n = sysread($from, my $buf, 1 << 20);
            return $sent unless $n;
            my $to = $from == $client ? $server : $client;
            $sent += $n if $from == $client;
            my $off = 0;
            while ($off < $n) {
                my $w = syswrite($to, $buf, $n - $off, $off);
                return $sent unless defined $w;
                $off += $w;
            }
        }
    }
}
