#ifndef LLMQ_CHIREDIS_SHIM_H
#define LLMQ_CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <sys/socket.h>

/// Interrupts a blocking call on the context's socket from another thread (used to stop a
/// blocked XREADGROUP on shutdown). The context stays owned by its thread, which frees it.
static inline int llmq_redis_shutdown_socket(redisContext *context) {
    return shutdown(context->fd, SHUT_RDWR);
}

static inline int llmq_redis_context_error(const redisContext *context) {
    return context->err;
}

static inline const char *llmq_redis_context_errstr(const redisContext *context) {
    return context->errstr;
}

#endif
