import DequeModule
#if canImport(CNIOLinux)
import CNIOLinux  // pthread_setname_np, which Glibc's module leaves out
#endif
import Foundation
import NIOConcurrencyHelpers

/// The thread one SQLite connection runs on, usable as a task executor: a transaction runs its
/// whole body here (`withTaskExecutorPreference`), so each of its statements is a plain function
/// call instead of a hand-off to a thread pool and back. SQLite calls block; a thread per
/// connection keeps them off the cooperative pool and the event loops.
final class SQLiteThread: TaskExecutor, @unchecked Sendable {
    private enum Work {
        case job(UnownedJob)
        case block(() -> Void)
        case stop
    }

    /// 1 while work is queued. Guards `queue` and `stopped`.
    private let signal = ConditionLock(value: 0)
    private var queue: Deque<Work> = []
    private var stopped = false
    private let started = ConditionLock(value: 0)
    /// Set once before `init` returns, read-only after.
    private var thread: pthread_t?

    init(name: String) {
        // The thread keeps its executor alive until `stop()` ends it.
        let t = Thread {
            // The system's name too (at most 15 bytes), which `top` and `perf` show.
            _ = CNIOLinux_pthread_setname_np(pthread_self(), String(name.utf8.prefix(15))!)
            self.main()
        }
        t.name = name
        t.start()
        started.lock(whenValue: 1)
        started.unlock()
    }

    /// Whether the caller runs on this thread (and may use the connection directly).
    var isCurrent: Bool {
        guard let thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    func enqueue(_ job: consuming ExecutorJob) {
        push(.job(UnownedJob(job)))
    }

    /// Runs `body` on this thread and returns its result to the waiting task.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            push(.block { c.resume(with: Result { try body() }) })
        }
    }

    /// Ends the thread once the work queued before this call has run. Work that arrives later
    /// (a task still using a closed connection) runs elsewhere, where the closed handle fails it.
    func stop() { push(.stop) }

    private func push(_ work: Work) {
        signal.lock()
        guard !stopped else {
            signal.unlock()
            switch work {
            case .job(let job): globalConcurrentExecutor.enqueue(job)
            case .block(let body): body()
            case .stop: break
            }
            return
        }
        if case .stop = work { stopped = true }
        queue.append(work)
        signal.unlock(withValue: 1)
    }

    private func main() {
        started.lock()
        thread = pthread_self()
        started.unlock(withValue: 1)
        let executor = asUnownedTaskExecutor()
        while true {
            signal.lock(whenValue: 1)
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            signal.unlock(withValue: 0)
            var stop = false
            for work in batch {
                switch work {
                case .job(let job): job.runSynchronously(on: executor)
                case .block(let body): body()
                case .stop: stop = true
                }
            }
            if stop { return }
        }
    }
}
