//! args_get, args_sizes_get, environ_get, environ_sizes_get, clock_res_get, clock_time_get,
//! random_get, poll_oneoff, sched_yield, proc_raise and the sock_* stubs.
//! argv after the standard three: `one`, `two words`, `ünïcode`.
tidepool_test_guests::entry!();

#[cfg(target_os = "wasi")]
mod guest {
    use tidepool_test_guests::*;

    pub fn main() {
        // argv and environment.
        let args = args();
        assert_eq!(&args[1..], ["/data/inputs", "/data/outputs", "one", "two words", "ünïcode"]);
        let (argc, size) = unsafe { args_sizes_get() }.unwrap();
        assert_eq!(argc, args.len());
        assert_eq!(size, args.iter().map(|a| a.len() + 1).sum::<usize>());
        assert_eq!(unsafe { environ_sizes_get() }.unwrap(), (0, 0), "no environment at all");
        assert_eq!(std::env::vars().count(), 0);

        // Clocks: virtual, advancing with work.
        assert_eq!(unsafe { clock_res_get(CLOCKID_REALTIME) }.unwrap(), 1);
        assert_eq!(unsafe { clock_res_get(CLOCKID_MONOTONIC) }.unwrap(), 1);
        assert_errno!(unsafe { clock_res_get(std::mem::transmute::<u32, Clockid>(9)) }, ERRNO_INVAL);
        assert_errno!(unsafe { clock_time_get(std::mem::transmute::<u32, Clockid>(9), 1) }, ERRNO_INVAL);
        let real = unsafe { clock_time_get(CLOCKID_REALTIME, 1) }.unwrap();
        assert!((1_735_689_600_000_000_000..1_735_689_700_000_000_000).contains(&real), "starts at 2025-01-01: {real}");
        let t1 = unsafe { clock_time_get(CLOCKID_MONOTONIC, 1) }.unwrap();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let t2 = unsafe { clock_time_get(CLOCKID_MONOTONIC, 1) }.unwrap();
        assert!(t2 > t1 + 100_000, "work advances the clock: {t1} -> {t2}");
        unsafe { clock_time_get(CLOCKID_PROCESS_CPUTIME_ID, 1) }.unwrap();

        // Sleeping advances the virtual clock by exactly the requested time, at once.
        let before = unsafe { clock_time_get(CLOCKID_MONOTONIC, 1) }.unwrap();
        let sub = Subscription {
            userdata: 7,
            u: SubscriptionU {
                tag: EVENTTYPE_CLOCK.raw(),
                u: SubscriptionUU {
                    clock: SubscriptionClock {
                        id: CLOCKID_MONOTONIC,
                        timeout: 3_600_000_000_000,
                        precision: 0,
                        flags: 0,
                    },
                },
            },
        };
        let mut events = [Event {
            userdata: 0,
            error: ERRNO_SUCCESS,
            type_: EVENTTYPE_CLOCK,
            fd_readwrite: EventFdReadwrite { nbytes: 0, flags: 0 },
        }; 2];
        let n = unsafe { poll_oneoff(&sub, events.as_mut_ptr(), 1) }.unwrap();
        assert_eq!((n, events[0].userdata, events[0].error), (1, 7, ERRNO_SUCCESS));
        let after = unsafe { clock_time_get(CLOCKID_MONOTONIC, 1) }.unwrap();
        assert!(
            after - before >= 3_600_000_000_000 && after - before < 3_600_010_000_000,
            "slept an hour: {}",
            after - before
        );
        std::thread::sleep(std::time::Duration::from_secs(86_400));

        // Descriptor subscriptions are ready at once and no clock fires with them.
        let subs = [
            sub,
            Subscription {
                userdata: 1,
                u: SubscriptionU {
                    tag: EVENTTYPE_FD_READ.raw(),
                    u: SubscriptionUU { fd_read: SubscriptionFdReadwrite { file_descriptor: 0 } },
                },
            },
            Subscription {
                userdata: 2,
                u: SubscriptionU {
                    tag: EVENTTYPE_FD_WRITE.raw(),
                    u: SubscriptionUU { fd_write: SubscriptionFdReadwrite { file_descriptor: 1 } },
                },
            },
        ];
        let mut events3 = [events[0]; 3];
        let n = unsafe { poll_oneoff(subs.as_ptr(), events3.as_mut_ptr(), 3) }.unwrap();
        assert_eq!(n, 2);
        let mut got: Vec<u64> = events3[..2].iter().map(|e| e.userdata).collect();
        got.sort();
        assert_eq!(got, [1, 2]);
        assert!(events3[..2].iter().all(|e| e.error == ERRNO_SUCCESS && e.type_ != EVENTTYPE_CLOCK));
        let bad = Subscription {
            userdata: 3,
            u: SubscriptionU {
                tag: EVENTTYPE_FD_READ.raw(),
                u: SubscriptionUU { fd_read: SubscriptionFdReadwrite { file_descriptor: 77 } },
            },
        };
        assert_eq!(unsafe { poll_oneoff(&bad, events.as_mut_ptr(), 1) }.unwrap(), 1);
        assert_eq!(events[0].error, ERRNO_BADF);
        assert_errno!(unsafe { poll_oneoff(&bad, events.as_mut_ptr(), 0) }, ERRNO_INVAL);

        // Randomness: seeded per job, so only its shape is checked here (the determinism tests
        // check the values).
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        unsafe { random_get(a.as_mut_ptr(), 64) }.unwrap();
        unsafe { random_get(b.as_mut_ptr(), 64) }.unwrap();
        assert!(a.iter().any(|&x| x != 0) && a != b, "a stream, not a constant");

        unsafe { sched_yield() }.unwrap();
        assert_errno!(unsafe { proc_raise(SIGNAL_TERM) }, ERRNO_NOTSUP);
        assert_errno!(unsafe { sock_shutdown(1, SDFLAGS_RD) }, ERRNO_NOTSOCK);
        assert_errno!(unsafe { sock_shutdown(99, SDFLAGS_RD) }, ERRNO_BADF);
        assert_errno!(unsafe { sock_accept(3, 0) }, ERRNO_NOTSOCK);
        println!("misc: ok");
    }
}
