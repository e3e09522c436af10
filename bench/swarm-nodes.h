/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * mp-swarm's MP nodes: one tether-mp (SQLite, or --store), or several on one
 * PostgreSQL sharing node 1's site key and TLS certificate (files copied to
 * each node's state directory, as an operator provisions them), and the
 * figures read around them: RSS and CPU from /proc, the database's rows
 * written (pg_stat_database), the machine's load average.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define SWARM_MAX_NODES 8

struct swarm_node {
        pid_t pid;
        uint16_t port;
        char state[128];
        char sock[160];
};

struct swarm_nodes_config {
        const char *mp;     /* the tether-mp binary */
        const char *dir;    /* a fresh directory for the nodes' state */
        const char *config; /* tether-mp --config FILE */
        const char *store;  /* NULL: SQLite (one node only) */
        const char *rate, *batch;
        bool console; /* the console on 127.0.0.1:0 (mp-swarm --console) */
        unsigned n;
};

/* Starts cfg->n nodes one after the other (each ready before the next);
 * exits the program with a message on failure. */
void swarm_nodes_start(const struct swarm_nodes_config *cfg, struct swarm_node *nodes);

/* Starts the nodes again on the state directories they were given by
 * swarm_nodes_start() (after they exited); their ports change. */
void swarm_nodes_restart(const struct swarm_nodes_config *cfg, struct swarm_node *nodes);

/* RSS (MiB) and CPU seconds of one process. */
void swarm_proc_figures(pid_t pid, double *rss_mib, double *cpu_s);

/* Sums over the nodes. */
void swarm_nodes_figures(const struct swarm_node *nodes, unsigned n, double *rss_mib, double *cpu_s);

/* Rows inserted + updated + deleted in the store's database so far
 * (pg_stat_database; the statistics collector lags by up to 0.5 s, so
 * the caller waits a second before reading); -1 without PostgreSQL. */
long long swarm_db_rows(const char *store);

/* "load average 5.34 5.61 6.12, 2 CPUs" into buf. */
void swarm_load(char *buf, size_t size);
