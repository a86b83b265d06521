// The machine's floor for smq's e2e path: a sender thread paced at RATE msg/s writes 1 KiB
// messages (with their send time) to a relay process over loopback TCP; the relay writes each
// back on a second connection; a receiver thread (another thread, as smq's consumer) reads them
// and records send->arrival latency. Two process hops and three thread wakeups per message,
// no storage: what scheduling and loopback alone cost on this machine at this rate.
// Built and run by scripts/bench-tails.sh beside each round (cc -O2 -pthread), or by hand:
//   cc -O2 -pthread -o /tmp/latency-floor scripts/latency-floor.c
//   /tmp/latency-floor RATE SECONDS BATCH   (BATCH messages handed at once, every BATCH/RATE s)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define MSG 1024
static uint64_t now_ns(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000ull+t.tv_nsec;}
static int rd(int fd, char*b, size_t n){size_t g=0;while(g<n){ssize_t r=read(fd,b+g,n-g);if(r<=0)return -1;g+=r;}return 0;}
static int wr(int fd, const char*b, size_t n){size_t g=0;while(g<n){ssize_t r=write(fd,b+g,n-g);if(r<=0)return -1;g+=r;}return 0;}
static int listen_on(int*port){int s=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);bind(s,(void*)&a,sizeof a);listen(s,4);socklen_t l=sizeof a;getsockname(s,(void*)&a,&l);*port=ntohs(a.sin_port);return s;}
static int connect_to(int port){int s=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={0};a.sin_family=AF_INET;a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);a.sin_port=htons(port);if(connect(s,(void*)&a,sizeof a))exit(1);int one=1;setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);return s;}
static long rate, total; static int batch, out_fd, in_fd; static uint64_t *lat;
static void* sender(void*x){static char b[MSG*1024];memset(b,7,sizeof b);uint64_t start=now_ns();long sent=0;
 while(sent<total){uint64_t due=start+(uint64_t)(sent*1e9/rate);struct timespec t={due/1000000000ull,due%1000000000ull};clock_nanosleep(CLOCK_MONOTONIC,TIMER_ABSTIME,&t,NULL);
  int n=batch; if(sent+n>total)n=total-sent; uint64_t ts=now_ns(); for(int i=0;i<n;i++)memcpy(b+i*MSG,&ts,8); wr(out_fd,b,(size_t)n*MSG); sent+=n;}
 return x;}
static int cmp(const void*a,const void*b){uint64_t x=*(const uint64_t*)a,y=*(const uint64_t*)b;return x<y?-1:x>y;}
int main(int c,char**v){rate=atol(v[1]);long secs=atol(v[2]);batch=atoi(v[3]);total=rate*secs;lat=calloc(total,8);
 int p1,p2;int l1=listen_on(&p1),l2=listen_on(&p2);
 if(fork()==0){int a=accept(l1,0,0);int b=connect_to(p2);int one=1;setsockopt(b,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);char buf[65536];for(;;){ssize_t r=read(a,buf,sizeof buf);if(r<=0)_exit(0);if(wr(b,buf,r))_exit(0);}}
 out_fd=connect_to(p1);in_fd=accept(l2,0,0);pthread_t t;pthread_create(&t,0,sender,0);
 char m[MSG];for(long i=0;i<total;i++){if(rd(in_fd,m,MSG))break;uint64_t ts;memcpy(&ts,m,8);lat[i]=now_ns()-ts;}
 pthread_join(t,0);close(out_fd);
 qsort(lat,total,8,cmp);
 printf("floor (loopback relay, no storage) %ld msg/s batch %d: p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n",rate,batch,lat[total/2]/1e6,lat[total*99/100]/1e6,lat[total*999/1000]/1e6,lat[total-1]/1e6);
 wait(0);return 0;}
