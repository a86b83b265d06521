// The machine's floor for smq's e2e path: a sender thread paced at RATE msg/s writes 1 KiB
// messages (with their send time) to a relay process over loopback TCP; the relay writes each
// back on a second connection; a receiver thread (another thread, as smq's consumer) reads them
// and records send->arrival latency. Two process hops and three thread wakeups per message,
// no storage: what scheduling and loopback alone cost on this machine at this rate.
// With SLAVE 1 the relay is a master with a slave, as under sync replication: it sends what
// it reads to a third process, which answers each read with its size (an acknowledgement), and
// passes bytes on to the receiver only once acknowledged: four process hops, no storage.
// Built and run by scripts/bench-tails.sh and scripts/bench-replication.sh beside each round
// (cc -O2 -pthread), or by hand:
//   cc -O2 -pthread -o /tmp/latency-floor scripts/latency-floor.c
//   /tmp/latency-floor RATE SECONDS BATCH [SLAVE]   (BATCH messages handed at once, every
//   BATCH/RATE s; SLAVE 1: through a master and its slave)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
// The master of SLAVE 1: reads from the sender (a), copies each read to its slave, and writes
// to the receiver (b) what the slave acknowledged. The slave answers each read with its size.
static void master(int a,int b){int sp;int ls=listen_on(&sp);
 if(fork()==0){int s=connect_to(sp);static char buf[65536];for(;;){ssize_t r=read(s,buf,sizeof buf);if(r<=0)_exit(0);uint64_t n=r;if(wr(s,(char*)&n,8))_exit(0);}}
 int s=accept(ls,0,0);int one=1;setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
 static char held[1<<26];size_t head=0,tail=0;char acks[4096];size_t have=0;
 struct pollfd f[2]={{a,POLLIN,0},{s,POLLIN,0}};
 for(;;){if(poll(f,2,-1)<0)_exit(1);
  if(f[0].revents){if(tail+65536>sizeof held){memmove(held,held+head,tail-head);tail-=head;head=0;}
   ssize_t r=read(a,held+tail,65536);if(r<=0)_exit(0);if(wr(s,held+tail,r))_exit(0);tail+=r;}
  if(f[1].revents){ssize_t r=read(s,acks+have,sizeof acks-have);if(r<=0)_exit(0);have+=r;size_t acked=0,at=0;
   for(;at+8<=have;at+=8){uint64_t n;memcpy(&n,acks+at,8);acked+=n;}memmove(acks,acks+at,have-at);have-=at;
   if(acked){if(wr(b,held+head,acked))_exit(0);head+=acked;if(head==tail)head=tail=0;}}}}
static int cmp(const void*a,const void*b){uint64_t x=*(const uint64_t*)a,y=*(const uint64_t*)b;return x<y?-1:x>y;}
int main(int c,char**v){rate=atol(v[1]);long secs=atol(v[2]);batch=atoi(v[3]);total=rate*secs;lat=calloc(total,8);
 int p1,p2;int l1=listen_on(&p1),l2=listen_on(&p2);
 int slave=c>4&&atoi(v[4]);
 if(fork()==0){int a=accept(l1,0,0);int b=connect_to(p2);if(slave)master(a,b);char buf[65536];for(;;){ssize_t r=read(a,buf,sizeof buf);if(r<=0)_exit(0);if(wr(b,buf,r))_exit(0);}}
 out_fd=connect_to(p1);in_fd=accept(l2,0,0);pthread_t t;pthread_create(&t,0,sender,0);
 char m[MSG];for(long i=0;i<total;i++){if(rd(in_fd,m,MSG))break;uint64_t ts;memcpy(&ts,m,8);lat[i]=now_ns()-ts;}
 pthread_join(t,0);close(out_fd);
 qsort(lat,total,8,cmp);
 printf("floor (loopback relay%s, no storage) %ld msg/s batch %d: p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n",slave?" through a slave":"",rate,batch,lat[total/2]/1e6,lat[total*99/100]/1e6,lat[total*999/1000]/1e6,lat[total-1]/1e6);
 wait(0);return 0;}
