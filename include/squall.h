/* squall — a callback-style HTTP/1.1 and WebSocket framework on libuv. */
#ifndef SQUALL_H
#define SQUALL_H

#include "squall/common.h"
#include "squall/version.h"
#include "squall/errno.h"
#include "squall/log.h"
#include "squall/router.h"
#include "squall/req.h"
#include "squall/res.h"
#include "squall/server.h"
#include "squall/workers.h"
#include "squall/blocking.h"
#include "squall/work.h"
#include "squall/timer.h"
#include "squall/promise.h"
#include "squall/queue.h"
#include "squall/watchdog.h"
#include "squall/ws.h"
#include "squall/hub.h"
#include "squall/client.h"
#include "squall/schema.h"
#include "squall/form.h"
#include "squall/openapi.h"
#include "squall/gzip.h"
#include "squall/access_log.h"
#include "squall/metrics.h"
#include "squall/static.h"

#endif
