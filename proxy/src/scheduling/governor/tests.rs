use super::*;

/// Two CPUs, as this file reads on a Linux 6.18 guest (proc(5): user nice system idle
/// iowait irq softirq steal guest guest_nice).
const STAT: &str = "\
cpu  1000 10 500 8000 100 0 50 20 0 0
cpu0 600 10 300 3000 60 0 30 10 0 0
cpu1 400 0 200 5000 40 0 20 10 0 0
intr 123456 0 9 0
ctxt 987654
btime 1764900000
processes 4242
procs_running 1
procs_blocked 0
softirq 1 2 3 4 5 6 7 8 9 10 11
";

#[test]
fn the_cpu_lines_of_the_allowed_cpus_are_summed() {
    let both = CpuTimes::parse(STAT, |_| true).expect("two CPUs");
    assert_eq!(both.idle, 3060 + 5040);
    assert_eq!(both.total, (600 + 10 + 300 + 3000 + 60 + 30 + 10) + 5670);
    let second = CpuTimes::parse(STAT, |cpu| cpu == 1).expect("CPU 1");
    assert_eq!(
        second,
        CpuTimes {
            idle: 5040,
            total: 5670
        }
    );
    assert_eq!(CpuTimes::parse(STAT, |cpu| cpu == 7), None);
}

#[test]
fn a_line_not_as_proc_describes_it_is_no_reading() {
    assert_eq!(
        CpuTimes::parse("cpu0 1 2 three 4 5 6 7 8\n", |_| true),
        None
    );
    assert_eq!(CpuTimes::parse("cpu0 1 2 3\n", |_| true), None);
    assert_eq!(CpuTimes::parse("", |_| true), None);
}

#[test]
fn this_machines_proc_stat_reads_for_the_cpus_this_process_may_use() {
    let allowed = sched_getaffinity(Pid::from_raw(0)).expect("the affinity mask");
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let times = CpuTimes::parse(&text, |cpu| is_allowed(&allowed, cpu)).expect("a reading");
    assert!(times.total > 0 && times.idle <= times.total, "{times:?}");
}

#[test]
fn the_idle_share_is_of_the_time_counted_between_two_readings() {
    let earlier = CpuTimes {
        idle: 100,
        total: 200,
    };
    let later = CpuTimes {
        idle: 130,
        total: 240,
    };
    assert_eq!(later.idle_share_since(&earlier), Some(0.75));
    assert_eq!(earlier.idle_share_since(&earlier), None, "no time counted");
    assert_eq!(earlier.idle_share_since(&later), None, "counters went back");
}

#[test]
fn a_busy_window_means_normal_at_once_and_batch_needs_a_run_of_calm_ones() {
    let mut state = Hysteresis::new(Policy::Normal);
    for _ in 1..CALM_WINDOWS {
        assert_eq!(state.observe(0.9), Policy::Normal);
    }
    assert_eq!(state.observe(0.9), Policy::Batch);
    // Between the thresholds nothing changes.
    assert_eq!(state.observe((BUSY + CALM) / 2.0), Policy::Batch);
    assert_eq!(state.observe(CALM), Policy::Batch);
    assert_eq!(state.observe(BUSY - 0.01), Policy::Normal);
    // A window between the thresholds breaks the run of calm ones.
    for _ in 1..CALM_WINDOWS {
        state.observe(0.9);
    }
    assert_eq!(state.observe((BUSY + CALM) / 2.0), Policy::Normal);
    for _ in 1..CALM_WINDOWS {
        assert_eq!(state.observe(0.9), Policy::Normal);
    }
    assert_eq!(state.observe(0.9), Policy::Batch);
}
