/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The session's seed-style log lines, with their journal fields (PUSH_ID,
 * TASK_ID, TASK_GUID, TASK_TYPE, RETURN_CODE), as an administrator who
 * knows CcmNotificationAgent.log expects them:
 *   Receive task from server with pushid=..., taskid=..., ...
 *   Send Task response message <BgbResponseMessage ...> successfully.
 */

#include <stddef.h>
#include <stdint.h>

#include "transport/message.h"

/* A PUSH whose signature verified and whose body parsed. */
void session_log_push(const struct tether_push *p);

/* A RESPONSE frame (our own, signed) that went out for task guid. */
void session_log_sent_response(const char *guid, uint32_t rc, const uint8_t *frame, size_t len);
