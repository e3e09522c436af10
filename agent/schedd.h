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

/* Borrows config until schedd_reload() or schedd_free(); takes priv_fd,
 * which may be -1 when the channel process is attached later. */
int schedd_new(sd_event *event, const struct tether_config *config, int priv_fd, struct schedd **ret);
struct schedd *schedd_free(struct schedd *s); /* accepts NULL */

/* Pings the channel process; READY=1 follows its first answer. */
int schedd_start(struct schedd *s);

/*
 * The channel process can be replaced while the scheduler runs on
 * (tetherd.c respawns it after a crash). Cycles keep running while no
 * channel process is attached; their results are kept and answered again
 * when the new channel process asks for the same TaskGUID (it re-sends RUN
 * for every spooled task without a response at start): a RUN for a task
 * that is still running is not run twice, and a RUN for a task that is
 * done gets its DONE again. A policy request left unanswered by the dead
 * process is asked of the new one.
 *
 * schedd_attach() takes priv_fd (replacing any previous one) and pings;
 * schedd_detach() closes the socket. While detached the watchdog is fed
 * (the root process is supervising the restart, not hung).
 */
int schedd_attach(struct schedd *s, int priv_fd);
void schedd_detach(struct schedd *s);

/* SIGTERM: STOPPING=1, running cycles stopped without answers (their tasks
 * stay in the channel's spool and run again after the restart). */
void schedd_stop(struct schedd *s);

/* SIGHUP: new cycle settings (borrowed from now on). */
int schedd_reload(struct schedd *s, const struct tether_config *config);
