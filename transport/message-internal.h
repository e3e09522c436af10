/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Private to message.c and message-build.c. */

#include <stdint.h>

/* The root element's name of a frame type's message, or NULL. */
const char *tether_msg_root_name(uint8_t type);
