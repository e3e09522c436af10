/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The directories of tetherd's two halves, made and handed over at start
 * by the root parent, before the fork. The invariant they keep: root never
 * consumes, creates, chmods or chowns a file by a path that runs through a
 * directory the channel user can write.
 *
 *  - <state_dir>: the channel process's (identity/, spool/, trust/ owned by
 *    the channel user). Root only makes the three subdirectories and gives
 *    them, with what is inside, to the channel user, through descriptors
 *    (openat walks on O_NOFOLLOW directory fds, fchown on an O_PATH fd of
 *    exactly the inode checked; hard-linked files are never touched).
 *  - the root state directory, <state_dir>-root (/var/lib/tether-root):
 *    the scheduler's verified policies and rollback floor. Owned by root,
 *    0700, and every directory above it owned by root and not writable by
 *    group or others (or sticky), so that nobody but root can rename or
 *    replace it. Without the privilege split as an unprivileged user,
 *    there is nobody to keep out and it is <state_dir> itself.
 */

#include <pwd.h>

struct tether_config;

/* The root half's state directory for config (see above); owned by the
 * caller. */
int dirs_root_state_path(const struct tether_config *config, char **ret);

/* Creates the root state directory if missing (0700) and checks it and
 * every directory above it. Returns 0, or a negative errno after logging
 * which directory is at fault and why. */
int dirs_prepare_root_state(const char *path);

/* Creates <state_dir> and the runtime directory if missing, and the
 * channel process's identity/, spool/ and trust/; with pw, gives those
 * three (and what is in them) to pw's user and group. Logs what fails. */
int dirs_prepare_channel(const struct tether_config *config, const struct passwd *pw);
