/* SPDX-License-Identifier: BSD-3-Clause */
/* Run under r3run with a source holding known bytes: orphan MIB OUT.
 * The first large block (region offset 0) is MIB MiB; the parent writes
 * byte i = i*7+1 into its first half, leaves the second half untouched
 * (the source's bytes, never filled), forks and exits at once. The child
 * waits until its parent is gone, then writes the block to OUT (the test
 * compares it with the pattern and the source's original bytes). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    size_t n = (size_t)atoi(argv[1]) << 20;
    unsigned char *b = malloc(n);
    if (!b)
        return 1;
    for (size_t i = 0; i < n / 2; i++)
        b[i] = (unsigned char)(i * 7 + 1);
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0)
        return 1;
    if (p > 0)
        return 0;                     /* the parent exits: the child is orphaned */
    for (int i = 0; i < 500 && getppid() == parent; i++)
        usleep(10000);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, b, n) != (ssize_t)n)
        _exit(1);
    close(fd);
    _exit(0);
}
