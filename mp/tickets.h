/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ticket.keys in the state directory: the keys that seal TLS session
 * tickets, so that a returning agent resumes its TLS session instead of a
 * full handshake (a reconnection storm after a restart costs a fraction of
 * the handshakes). The SIGNIN is still verified on every connection.
 *
 * One key a line, newest first: "<created, Unix seconds> <160 hex digits>"
 * (tether_tls_ticket_key). The newest seals new tickets; the one before it
 * still opens the tickets it sealed. The nodes of a site share the file
 * (copy it, or a shared directory): a ticket from one node is resumed on
 * any. It is as secret as tls.key (0600): who holds it can resume as the
 * MP with any agent's ticket.
 *
 * At start and every MP_TICKET_CHECK_SEC the file is read again (another
 * node may have rotated it) and, when its newest key is older than
 * MP_TICKET_ROTATE_SEC, a new key is put first and only one older key
 * kept. Tickets live as long as a key is current, so the kept key opens
 * every ticket not yet expired.
 */

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "transport/tls.h"

/* TLS 1.3's longest ticket lifetime (RFC 8446 4.6.1): a fleet whose
 * channels stay up for days still resumes after an MP restart. */
#define MP_TICKET_ROTATE_SEC (7u * 24u * 3600u)
#define MP_TICKET_CHECK_SEC (10u * 60u)
#define MP_TICKET_KEEP 2u

struct mp_server;

/* Reads path (missing: no keys), rotates when the newest key is at least
 * rotate_sec old at now (or there is none) and writes the file back
 * atomically (0600). Fills keys[0..*ret_n), newest first. A malformed file
 * is left as it is: -EBADMSG, logged with the line at fault. */
int mp_tickets_refresh(const char *path, time_t now, uint32_t rotate_sec,
                       struct tether_tls_ticket_key keys[MP_TICKET_KEEP], size_t *ret_n);

/* Installs the keys of <state>/ticket.keys on srv->tls and arms the timer
 * that rereads and rotates them. A bad file leaves tickets off (full
 * handshakes) with an error logged; only a failed timer is returned. */
int mp_tickets_start(struct mp_server *srv);
void mp_tickets_stop(struct mp_server *srv);
