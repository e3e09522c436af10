/* SPDX-License-Identifier: Apache-2.0 */
#include "bench/swarm-console.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/strutil.h"

pid_t swarm_console_start(const char *script, const char *dir, const char *state, const char *mp,
                          unsigned n) {
        char result[128], count[16];
        pid_t pid;

        snprintf(result, sizeof(result), "%s/console-result", dir);
        snprintf(count, sizeof(count), "%u", n);
        fflush(stdout);
        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "mp-swarm: fork: %s\n", strerror(errno));
                exit(1);
        }
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                execl(script, script, state, mp, count, result, (char *)NULL);
                _exit(127);
        }
        return pid;
}

void swarm_console_done(pid_t pid, const char *dir, double t_last_ack) {
        char path[160], line[128];
        int status = 0;
        FILE *f;

        if (pid > 0 && (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0))
                fprintf(stderr, "mp-swarm: the console script failed (status %d)\n", status);
        snprintf(path, sizeof(path), "%s/console-result", dir);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (startswith(line, "page_all_answered=")) {
                        double t = strtod(line + 18, NULL);
                        printf("console view lag:     %.3f s after the last acknowledged response\n",
                               t - t_last_ack);
                }
        if (f)
                fclose(f);
}
