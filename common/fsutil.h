/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Small file helpers for durable state (the agent's spool and identity, the
 * scheduler's policies, keys, the MP's state): atomic replace (temporary
 * file, fdatasync, rename, fsync of the directory), whole-file reads,
 * mkdir -p. Temporary files are named ".#<name>.tmp" so that recovery can
 * recognise and remove them.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FSUTIL_TMP_PREFIX ".#"
#define FSUTIL_TMP_SUFFIX ".tmp"

enum fsutil_flags {
        FSUTIL_DURABLE = 1u << 0, /* fdatasync the data and fsync the directory */
};

/* The steps of write_file_atomic_at(), for fault injection in tests. */
enum fsutil_step {
        FSUTIL_STEP_OPEN = 1,
        FSUTIL_STEP_WRITE_HALF,
        FSUTIL_STEP_WRITE_ALL,
        FSUTIL_STEP_SYNC,
        FSUTIL_STEP_RENAME,
        FSUTIL_STEP_SYNC_DIR,
        FSUTIL_STEP_MAX,
};

/*
 * Test hook, NULL in production. Called after each step has been done.
 * Returning -ECANCELED simulates a crash right there: the function returns
 * at once and leaves whatever is on disk (a stray temporary file, a renamed
 * file whose directory was not synced). Any other negative errno is treated
 * as a real failure of that step (e.g. -ENOSPC), with the normal cleanup.
 */
extern int (*fsutil_fault_hook)(enum fsutil_step step);

/* Replaces dirfd/name with data atomically, with exactly the given mode
 * whatever the umask. Returns 0 or a negative errno; on failure the previous
 * content of name is untouched and the temporary file removed (except for a
 * simulated crash). */
int write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                         unsigned flags);

/* The same for a path: the directory is the one path names. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, unsigned flags);

/* Reads a whole file of at most max bytes (the one capped read of the tree).
 * *ret (NUL-terminated one byte past *ret_len) is owned by the caller.
 * -EFBIG when larger than max, -EBADF when name is not a regular file; a
 * symbolic link is not followed (-ELOOP). */
int read_file_at(int dirfd, const char *name, size_t max, uint8_t **ret, size_t *ret_len);

/* The same for an open fd, read to its end (a pipe too): -EFBIG as soon as
 * more than max bytes came. */
int read_fd_capped(int fd, size_t max, uint8_t **ret, size_t *ret_len);

/* Creates path and its parents with mode (existing ones are left alone). */
int mkdir_p(const char *path, mode_t mode);

/* True for a name that write_file_atomic_at() uses as a temporary file. */
bool fsutil_is_tmp_name(const char *name);

/* Joins a and b with one '/'. Owned by the caller; NULL on ENOMEM. */
char *path_join(const char *a, const char *b);
