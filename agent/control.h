/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The control socket of the channel process, for tetherctl: a unix stream
 * socket at <runtime_dir>/tetherd.sock (0660 root:tether, bound by the
 * privileged parent). Protocol: the client sends one line,
 *   "<command>[ <argument>]\n"   (at most 1023 bytes),
 * the server answers one JSON object and a newline, and closes. Every
 * answer has "ok": true|false, and "error" when false.
 */

#include <sys/types.h>

#include <systemd/sd-event.h>

struct json_object;
struct control_server;

/* Returns a new JSON object (ownership passes to the server). peer_uid is
 * the client's uid from SO_PEERCRED ((uid_t)-1 if unknown). */
typedef struct json_object *(*control_handler_fn)(void *userdata, const char *command, const char *argument,
                                                  uid_t peer_uid);

/* listen_fd: a listening socket, owned by the server from now on. */
int control_server_new(sd_event *event, int listen_fd, control_handler_fn handler, void *userdata,
                       struct control_server **ret);
struct control_server *control_server_free(struct control_server *c); /* accepts NULL */

/* Binds and listens at path (removing a stale socket). The socket is born
 * 0660 and, when gid is not -1, in group gid (the caller must be root
 * then): nothing is chmod-ed or chown-ed by path afterwards, which a
 * symlink renamed into a directory another user can write would redirect.
 * Returns the fd. */
int control_socket_bind(const char *path, gid_t gid);

/* For "status": a JSON array of the names of the users with an active or
 * online login session (sd-login), the users a user-policy cycle without
 * TaskParam runs for; [] where there is no logind (a container). Owned by
 * the caller; NULL on allocation failure. */
struct json_object *control_active_users(void);

/* Client side (tetherctl): sends line, returns the answer (owned by the
 * caller, NUL-terminated). */
int control_request(const char *path, const char *line, char **ret);
