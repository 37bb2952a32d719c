#ifndef LLMQ_CCURL_SHIM_H
#define LLMQ_CCURL_SHIM_H

#include <curl/curl.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

// curl_easy_setopt, curl_easy_getinfo and curl_multi_setopt are variadic and cannot be called
// from Swift. These typed wrappers cover the argument kinds llmq passes.

static inline CURLcode llmq_curl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode llmq_curl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode llmq_curl_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode llmq_curl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

typedef size_t (*llmq_curl_write_callback)(char *data, size_t size, size_t count, void *userdata);

static inline CURLcode llmq_curl_easy_setopt_write_function(CURL *handle, llmq_curl_write_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}

static inline CURLcode llmq_curl_easy_setopt_header_function(CURL *handle, llmq_curl_write_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, callback);
}

static inline CURLcode llmq_curl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode llmq_curl_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLMcode llmq_curl_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}

typedef int (*llmq_curl_socket_callback)(CURL *easy, curl_socket_t socket, int what, void *userp, void *socketp);
typedef int (*llmq_curl_timer_callback)(CURLM *multi, long timeout_ms, void *userp);

static inline CURLMcode llmq_curl_multi_setopt_socket_function(CURLM *handle, llmq_curl_socket_callback callback, void *userp) {
    CURLMcode code = curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, callback);
    return code != CURLM_OK ? code : curl_multi_setopt(handle, CURLMOPT_SOCKETDATA, userp);
}

static inline CURLMcode llmq_curl_multi_setopt_timer_function(CURLM *handle, llmq_curl_timer_callback callback, void *userp) {
    CURLMcode code = curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, callback);
    return code != CURLM_OK ? code : curl_multi_setopt(handle, CURLMOPT_TIMERDATA, userp);
}

// epoll and eventfd for curl's socket interface (epoll_event is a packed struct, which Swift
// does not import well): a set of sockets, each watched for reading and/or writing, and an
// eventfd to wake the waiting thread.

static inline int llmq_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static inline int llmq_eventfd_create(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

static inline void llmq_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t written = write(fd, &one, sizeof one);
    (void)written;
}

static inline void llmq_eventfd_drain(int fd) {
    uint64_t count;
    ssize_t got = read(fd, &count, sizeof count);
    (void)got;
}

/// Watches `fd` for reading and/or writing (added, or changed if it is in the set already).
static inline int llmq_epoll_watch(int epfd, int fd, int readable, int writable) {
    struct epoll_event registration = {0};
    registration.events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    registration.data.fd = fd;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &registration) == 0) return 0;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &registration);
}

static inline void llmq_epoll_unwatch(int epfd, int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

/// Waits up to `timeout_ms` for ready descriptors: fills `fds` and, per descriptor, curl's
/// CURL_CSELECT_* mask; returns how many (0 on timeout, -1 on error).
static inline int llmq_epoll_wait(int epfd, int *fds, int *masks, int max, int timeout_ms) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int ready = epoll_wait(epfd, events, max, timeout_ms);
    for (int i = 0; i < ready; i++) {
        fds[i] = events[i].data.fd;
        int mask = 0;
        if (events[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
        masks[i] = mask;
    }
    return ready;
}

#endif
