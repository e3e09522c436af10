/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The administrator's console: HTTPS (libmicrohttpd, GnuTLS, the MP's own
 * TLS certificate) serving the REST API under /api/v1/ (mp/api*.c, see
 * docs/openapi.yaml) and the web console's static files.
 *
 * libmicrohttpd runs inside the MP's sd-event loop, in its "external epoll"
 * mode: MHD's epoll fd is one more I/O source of the loop and a timer
 * follows MHD_get_timeout(); each wakeup calls MHD_run(). So every request
 * is handled on the loop's one thread, next to the registry, the sessions
 * and the pushes it reads and starts: no locks and no handoff between
 * threads. A request's work is short (a password hash, ~50 ms with argon2id,
 * is the longest); the channel's fan-out keeps its own timers.
 *
 * Ownership: the console is the server's (mp_console_free).
 */

#include <stdbool.h>
#include <stdint.h>

struct mp_server;
struct mp_console;

/* Listens on spec ("ADDR:PORT"; port 0 = any) with cert and key (PEM). */
int mp_console_new(struct mp_server *srv, const char *spec, const char *cert_pem, const char *key_pem,
                   const char *webroot, struct mp_console **ret);
struct mp_console *mp_console_free(struct mp_console *con);
uint16_t mp_console_port(const struct mp_console *con);
/* Something a live view shows changed (a push advanced): wakes the
 * server-sent event streams. */
void mp_console_push_progress(struct mp_console *con, uint64_t push_id);
/* A device went offline, and why (shown in the console). A weak reason
 * (the connection closed) does not replace a stronger one given before it
 * (the agent's GOODBYE). con may be NULL. */
void mp_console_device_offline(struct mp_console *con, const char *client_id, const char *reason, bool weak);
