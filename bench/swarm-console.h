/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * mp-swarm --console: the console bench script (bench/console-bench.py),
 * started once every client is signed in; it times the REST API and starts
 * the action itself. It writes "page_all_answered=<CLOCK_MONOTONIC
 * seconds>" to dir/console-result.
 */

#include <sys/types.h>

/* Starts script with the node's state directory, the tether-mp path, n and
 * the result file; exits the program when it cannot fork. */
pid_t swarm_console_start(const char *script, const char *dir, const char *state, const char *mp,
                          unsigned n);

/* Waits for the script unless reaped (pid -1; it stops once the console
 * shows every answer) and prints the lag of that view behind the last
 * acknowledged response. */
void swarm_console_done(pid_t pid, const char *dir, double t_last_ack);
