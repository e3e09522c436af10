/* SPDX-License-Identifier: Apache-2.0 */
#include "bench/swarm-nodes.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/strutil.h"

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int r) {
        fprintf(stderr, "mp-swarm: %s: %s\n", what, strerror(r < 0 ? -r : r));
        exit(1);
}

static int wait_ready(int notify_fd, pid_t pid) {
        char buf[256];
        double deadline = now_s() + 60;

        while (now_s() < deadline) {
                struct pollfd p = {.fd = notify_fd, .events = POLLIN};
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        return -ECHILD;
                if (poll(&p, 1, 200) <= 0)
                        continue;
                ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, 0);
                if (n > 0) {
                        buf[n] = 0;
                        if (strstr(buf, "READY=1"))
                                return 0;
                }
        }
        return -ETIMEDOUT;
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
        char from[256], to[256], buf[8192];
        ssize_t n;
        int in, out;

        snprintf(from, sizeof(from), "%s/%s", from_dir, name);
        snprintf(to, sizeof(to), "%s/%s", to_dir, name);
        in = open(from, O_RDONLY | O_CLOEXEC);
        out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (in < 0 || out < 0)
                die(name, errno);
        while ((n = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t)n) != n)
                        die(name, errno);
        close(in);
        close(out);
}

static uint16_t read_port(const char *state) {
        char path[192], line[64];
        uint64_t v;
        uint16_t port = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/ports", state);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (startswith(line, "tcp=")) {
                        line[strcspn(line, "\n")] = 0;
                        if (parse_u64(line + 4, 1, 65535, &v) == 0)
                                port = (uint16_t)v;
                }
        if (f)
                fclose(f);
        if (!port)
                die("ports", EIO);
        return port;
}

static void start_one(const struct swarm_nodes_config *cfg, unsigned i, struct swarm_node *node,
                      bool again) {
        char notify[192], node_id[32];
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        snprintf(node->state, sizeof(node->state), "%s/node%u", cfg->dir, i + 1);
        snprintf(node->sock, sizeof(node->sock), "%s/admin.sock", node->state);
        snprintf(notify, sizeof(notify), "%s/notify%u", cfg->dir, i + 1);
        snprintf(node_id, sizeof(node_id), "swarm-node-%u", i + 1);
        strscpy(sa.sun_path, sizeof(sa.sun_path), notify);
        if (again)
                (void)unlink(notify);
        if (nfd < 0 || bind(nfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("notify socket", errno);
        if (!again && mkdir(node->state, 0700) < 0)
                die(node->state, errno);
        if (i > 0 && !again)
                for (const char *const *f =
                             (const char *const[]){"site.key", "site.pub", "tls.key", "tls.crt", NULL};
                     *f; f++) {
                        char first[160];
                        snprintf(first, sizeof(first), "%s/node1", cfg->dir);
                        copy_file(first, node->state, *f);
                }
        node->pid = fork();
        if (node->pid == 0) {
                char log[192];
                snprintf(log, sizeof(log), "%s/mp%u.log", cfg->dir, i + 1);
                int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (lfd >= 0) {
                        dup2(lfd, STDOUT_FILENO);
                        dup2(lfd, STDERR_FILENO);
                }
                setenv("NOTIFY_SOCKET", notify, 1);
                if (cfg->store)
                        execl(cfg->mp, cfg->mp, "serve", "--config", cfg->config, "--state-dir", node->state,
                              "--listen", "127.0.0.1:0", "--https-listen", "off", "--console-listen",
                              cfg->console ? "127.0.0.1:0" : "off", "--push-rate", cfg->rate, "--push-batch",
                              cfg->batch, "--store", cfg->store, "--node-id", node_id, (char *)NULL);
                else
                        execl(cfg->mp, cfg->mp, "serve", "--config", cfg->config, "--state-dir", node->state,
                              "--listen", "127.0.0.1:0", "--https-listen", "off", "--console-listen",
                              cfg->console ? "127.0.0.1:0" : "off", "--push-rate", cfg->rate, "--push-batch",
                              cfg->batch, (char *)NULL);
                _exit(127);
        }
        if (node->pid < 0)
                die("fork", errno);
        if (wait_ready(nfd, node->pid) < 0) {
                fprintf(stderr, "mp-swarm: %s did not start; see %s/mp%u.log\n", cfg->mp, cfg->dir, i + 1);
                kill(node->pid, SIGKILL);
                exit(1);
        }
        close(nfd);
        node->port = read_port(node->state);
}

void swarm_nodes_start(const struct swarm_nodes_config *cfg, struct swarm_node *nodes) {
        if (cfg->n > 1 && !cfg->store) {
                fprintf(stderr, "mp-swarm: --nodes above 1 needs --store postgresql://...\n");
                exit(2);
        }
        for (unsigned i = 0; i < cfg->n; i++)
                start_one(cfg, i, &nodes[i], false);
}

void swarm_nodes_restart(const struct swarm_nodes_config *cfg, struct swarm_node *nodes) {
        for (unsigned i = 0; i < cfg->n; i++)
                start_one(cfg, i, &nodes[i], true);
}

void swarm_proc_figures(pid_t pid, double *rss_mib, double *cpu_s) {
        char path[64], line[512];
        FILE *f;

        *rss_mib = *cpu_s = 0;
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        f = fopen(path, "re");
        if (f) {
                while (fgets(line, sizeof(line), f))
                        if (startswith(line, "VmRSS:"))
                                *rss_mib = strtod(line + 6, NULL) / 1024.0;
                fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        f = fopen(path, "re");
        if (f) {
                if (fgets(line, sizeof(line), f)) {
                        /* utime and stime: fields 14 and 15, after the ")" of comm */
                        char *p = strrchr(line, ')');
                        unsigned long ut = 0, st = 0;
                        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                                        &st) == 2)
                                *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
                }
                fclose(f);
        }
}

void swarm_nodes_figures(const struct swarm_node *nodes, unsigned n, double *rss_mib, double *cpu_s) {
        *rss_mib = *cpu_s = 0;
        for (unsigned i = 0; i < n; i++) {
                double r, c;
                swarm_proc_figures(nodes[i].pid, &r, &c);
                *rss_mib += r;
                *cpu_s += c;
        }
}

long long swarm_db_rows(const char *store) {
        PGconn *db;
        PGresult *res;
        long long rows = -1;

        if (!store)
                return -1;
        db = PQconnectdb(store);
        if (PQstatus(db) != CONNECTION_OK) {
                PQfinish(db);
                return -1;
        }
        /* A fresh snapshot of the statistics, not the transaction's cached one. */
        PQclear(PQexec(db, "SELECT pg_stat_clear_snapshot()"));
        res = PQexec(db, "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                         "WHERE datname = current_database()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
                rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        PQfinish(db);
        return rows;
}

void swarm_load(char *buf, size_t size) {
        double l1 = 0, l5 = 0, l15 = 0;
        FILE *f = fopen("/proc/loadavg", "re");

        if (f) {
                if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) != 3)
                        l1 = l5 = l15 = 0;
                fclose(f);
        }
        snprintf(buf, size, "load average %.2f %.2f %.2f, %ld CPUs", l1, l5, l15,
                 sysconf(_SC_NPROCESSORS_ONLN));
}
