/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The channel process (user "tether", or the single process when not root):
 * it owns the identity, the site-key trust, the spool, the session, the link
 * to the MP and the control socket, all on one sd-event loop, and talks to
 * the scheduler half over the privsep socket (agent/privsep.h).
 */

#include <systemd/sd-event.h>

struct tether_config;
struct channeld;

/* Takes ownership of config, priv_fd and control_fd (-1: no control socket). */
int channeld_new(sd_event *event, struct tether_config *config, int priv_fd, int control_fd,
                 struct channeld **ret);
struct channeld *channeld_free(struct channeld *c); /* accepts NULL */

/* Starts the link, re-runs tasks left unanswered by a previous run. */
int channeld_start(struct channeld *c);

/* SIGTERM: GOODBYE(shutdown) best effort, then close; tasks stay spooled. */
void channeld_stop(struct channeld *c);

/* SIGHUP: applies a freshly loaded configuration (takes ownership). */
int channeld_reload(struct channeld *c, struct tether_config *config);
