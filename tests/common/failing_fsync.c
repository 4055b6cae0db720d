/* Preloaded into a node under test (LD_PRELOAD): while the file named by
 * MCKV_TEST_FSYNC_FAILS_WHEN exists, fsync and fdatasync fail with EIO, as
 * on a disk that could not write back what the kernel held; while the one
 * named by MCKV_TEST_FSYNC_STALLS_WHEN exists, they wait for it to go, as
 * on a disk that is slow to write back. Otherwise they are the system
 * calls themselves. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int exists(const char *name) {
    const char *trigger = getenv(name);
    return trigger != NULL && access(trigger, F_OK) == 0;
}

/* Whether the call must fail, once any stall is over. */
static int failing(void) {
    while (exists("MCKV_TEST_FSYNC_STALLS_WHEN")) {
        usleep(1000);
    }
    return exists("MCKV_TEST_FSYNC_FAILS_WHEN");
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
