/* Preloaded into a node under test (LD_PRELOAD): while the file named by
 * MCKV_TEST_FSYNC_FAILS_WHEN exists, fsync and fdatasync fail with EIO, as
 * on a disk that could not write back what the kernel held. Otherwise they
 * are the system calls themselves. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int failing(void) {
    const char *trigger = getenv("MCKV_TEST_FSYNC_FAILS_WHEN");
    return trigger != NULL && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
    if (failing()) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd) {
    if (failing()) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}
