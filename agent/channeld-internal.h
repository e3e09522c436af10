/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Private to channeld.c and channeld-control.c: the channel process's state. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "agent/channel.h"
#include "agent/config.h"
#include "agent/privsep.h"

#define USEC_PER_SEC 1000000ULL
#define GC_INTERVAL_USEC (24ULL * 3600ULL * USEC_PER_SEC)
#define MAX_ETAGS 64
#define RECENT_TASKS 20

struct etag_entry {
        char *user; /* "" for the machine policy */
        char *etag;
};

struct channeld {
        sd_event *event;
        struct tether_config *config;
        struct tether_identity *identity;
        struct site_trust *trust;
        struct tether_spool *spool;
        struct session *session;
        struct tether_channel *channel;
        struct control_server *control;

        int priv_fd;
        sd_event_source *priv_source;
        uint8_t *priv_buf;

        sd_event_source *gc_timer;
        /* A protocol error's reconnection, deferred so that the link can
         * write the GOODBYE(protocol-error) queued just before it. */
        sd_event_source *reconnect_timer;
        uint32_t reconnect_delay;
        /* After GOODBYE(shutdown): the link is stopped and restarted at a
         * random point of the advertised window (microsecond precision). */
        sd_event_source *spread_timer;
        /* Retries pushes refused while the spool was full. */
        sd_event_source *held_timer;

        enum tether_channel_state state;
        char transport[16];
        char detail[256];
        char peer[300];                        /* the MP's "host:port" of the current connection */
        char status[PRIV_STATUS_MAX + 1];      /* the line last passed on */
        char status_next[PRIV_STATUS_MAX + 1]; /* the line to pass on */
        sd_event_source *status_timer;
        struct etag_entry etags[MAX_ETAGS];
        size_t n_etags;
        bool stopping;
};

/* Hands one cycle to the scheduler half (a session op). */
int op_run(void *userdata, uint32_t cycle, const char *task_guid, const char *param);
/* Makes the link from the configuration and the identity. */
int channel_create(struct channeld *c);
/* "host:port" of the MP address tried or connected now (PROTOCOL-v1 7.4). */
void mp_peer(struct channeld *c, char *buf, size_t size);

/* channeld-control.c: tetherctl's commands, and the periodic device key
 * rotation they share with the life cycle. */
struct json_object *ctl_handler(void *userdata, const char *command, const char *argument, uid_t peer_uid);
void rotate_if_due(struct channeld *c);
