// Sleeps PERIOD_US in a loop and prints each wake-up later than THRESH_US past its
// deadline, with its CLOCK_MONOTONIC time, plus a histogram of lateness at the end.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <stdint.h>
static int64_t ns(struct timespec t){return (int64_t)t.tv_sec*1000000000LL+t.tv_nsec;}
int main(int argc,char**argv){
  int period=atoi(argv[1]); int secs=atoi(argv[2]); int thresh=atoi(argv[3]);
  struct timespec now; clock_gettime(CLOCK_MONOTONIC,&now);
  int64_t end=ns(now)+(int64_t)secs*1000000000LL, deadline=ns(now);
  long n=0,b[8]={0}; int64_t worst=0;
  for(;;){
    deadline+=period*1000LL;
    struct timespec d={deadline/1000000000LL,deadline%1000000000LL};
    clock_nanosleep(CLOCK_MONOTONIC,TIMER_ABSTIME,&d,NULL);
    clock_gettime(CLOCK_MONOTONIC,&now); int64_t late=ns(now)-deadline; n++;
    if(late>worst)worst=late;
    int i= late<50000?0: late<100000?1: late<250000?2: late<500000?3: late<1000000?4: late<2000000?5: late<4000000?6:7;
    b[i]++;
    if(late>thresh*1000LL) printf("%.6f late %.3f ms\n", ns(now)/1e9, late/1e6);
    if(ns(now)>end)break;
    if(late>period*1000LL) deadline=ns(now);
  }
  const char*l[]={"<50us","<100us","<250us","<500us","<1ms","<2ms","<4ms",">=4ms"};
  printf("wakeups %ld worst %.3f ms\n",n,worst/1e6);
  for(int i=0;i<8;i++)printf("  %s %ld\n",l[i],b[i]);
}
