/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The scheduler half of tetherd (root when privilege-separated): it runs
 * scheduler/ on its own sd-event loop and accepts only RUN, POLICY,
 * SITE_KEY, PING/PONG and STATUS from the channel process (agent/privsep.h).
 * It also speaks to systemd: READY=1 once both halves answer, STATUS=
 * lines from the channel process, WATCHDOG=1 (sd-event's watchdog) only
 * while the channel process answers pings, STOPPING=1.
 */

#include <stdbool.h>

#include <systemd/sd-event.h>

struct tether_config;
struct schedd;

/* Borrows config until schedd_reload() or schedd_free(); takes priv_fd. */
int schedd_new(sd_event *event, const struct tether_config *config, int priv_fd, struct schedd **ret);
struct schedd *schedd_free(struct schedd *s); /* accepts NULL */

/* Pings the channel process; READY=1 follows its first answer. */
int schedd_start(struct schedd *s);

/* SIGTERM: STOPPING=1, running cycles stopped without answers (their tasks
 * stay in the channel's spool and run again after the restart). */
void schedd_stop(struct schedd *s);

/* SIGHUP: new cycle settings (borrowed from now on). */
int schedd_reload(struct schedd *s, const struct tether_config *config);
