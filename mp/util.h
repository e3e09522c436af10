/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* Small helpers shared by tether-mp's files. */

#include <json-c/json.h>

#include "common/cleanup.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put)
