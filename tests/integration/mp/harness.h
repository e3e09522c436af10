/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A protocol-speaking test peer for tether-mp, built on transport/: starts
 * the real server on loopback port 0 in a temporary state directory (and
 * always kills it), opens device channels over mutual TLS, and runs the CLI.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "transport/frame.h"
#include "transport/message.h"

struct tether_key;
struct tether_tls_ctx;
struct tether_tls_conn;

struct mp_server_proc {
        pid_t pid;
        char dir[128];
        char state[160];
        uint16_t tcp_port, https_port;
        char tls_fingerprint[65];
        struct tether_key *site_key;
};

/* Starts `tether-mp serve` with extra arguments (NULL-terminated); waits for
 * READY=1 on a private NOTIFY_SOCKET. Returns 0 or a negative errno. */
int mp_proc_start(struct mp_server_proc *p, const char *const *extra);
/* Restarts over the same state directory. */
int mp_proc_restart(struct mp_server_proc *p, const char *const *extra);
/* Stops with sig (SIGTERM or SIGKILL), waits; returns the exit status. */
int mp_proc_stop(struct mp_server_proc *p, int sig);
/* Stops if running and removes the directory. */
void mp_proc_cleanup(struct mp_server_proc *p);

/* Runs `tether-mp ARGS... --state-dir DIR`; stdout into *ret_out (owned by
 * the caller, may be NULL). Returns the exit code. */
int mp_cli(struct mp_server_proc *p, char **ret_out, const char *const *args);
/* The same with --json, parsed. */
json_object *mp_cli_json(struct mp_server_proc *p, const char *const *args);

struct device {
        struct tether_key *key;
        char *cert_pem;
        char client_id[37];
        char cert_path[200], key_path[200];
};

int device_new(struct device *d, const char *client_id /* NULL: random */, const char *dir);
void device_done(struct device *d);

struct chan {
        int fd;
        struct tether_tls_ctx *ctx;
        struct tether_tls_conn *tls;
        struct tether_frame_decoder *dec;
        uint8_t rbuf[65536];
        size_t roff, rlen;
};

int chan_open(struct chan *c, struct mp_server_proc *p, const struct device *d);
/* The same TLS client on another of the server's ports (its HTTPS port). */
int chan_open_port(struct chan *c, struct mp_server_proc *p, const struct device *d, uint16_t port);
void chan_close(struct chan *c);
int chan_send_raw(struct chan *c, const void *data, size_t len);
int chan_send(struct chan *c, const struct tether_msg *msg, const struct tether_key *signer);
/* Waits up to timeout_ms for one frame: 1 with *ret, -ETIMEDOUT, -ECONNRESET
 * on EOF. */
int chan_recv(struct chan *c, int timeout_ms, struct tether_frame **ret);
/* Receives a frame and opens it (site key for signed types). */
int chan_recv_msg(struct chan *c, struct mp_server_proc *p, int timeout_ms, struct tether_msg **ret);

/* SIGNIN (signed by signer, with pubkey's PublicKey) and the answer. */
int chan_signin(struct chan *c, struct mp_server_proc *p, const struct device *d,
                const struct tether_key *signer, const struct tether_key *pubkey, const char *token,
                struct tether_msg **ret);

/* A signed RESPONSE for a PUSH. */
int make_response(const struct device *d, const struct tether_push *push, uint32_t rc, const char *detail,
                  struct tether_msg *ret);
