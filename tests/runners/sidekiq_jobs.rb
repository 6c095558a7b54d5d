# The Sidekiq jobs of tests/runners.rs and bench/runners. Each job appends
# "NAME start|done|failed PID MONOTONIC_NS" lines to $JOBS_DIR/events, so a
# test sees what ran, what finished, and what ran twice (a job pushed back to
# Redis and run again by a fresh Sidekiq starts twice and finishes once).
require "sidekiq"

module Events
  def event(name, what)
    now = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
    File.open(File.join(ENV.fetch("JOBS_DIR"), "events"), "a") do |f|
      f.write("#{name} #{what} #{Process.pid} #{now}\n")
    end
  end
end

# Sleeps SECONDS: the short job a drain must let finish.
class SleepJob
  include Sidekiq::Worker
  include Events

  def perform(name, seconds)
    event(name, "start")
    sleep(seconds)
    event(name, "done")
  end
end

# Runs `sleep SECONDS` as a child process and fails if the child does: what a
# job that shells out to a converter or an uploader does.
class ChildJob
  include Sidekiq::Worker
  include Events

  def perform(name, seconds)
    event(name, "start")
    unless system("sleep", seconds.to_s)
      event(name, "failed")
      raise "sleep #{seconds} failed: #{$?}"
    end
    event(name, "done")
  end
end

# Runs until $JOBS_DIR/release exists (at most SECONDS): longer than any
# drain, so only a push back to Redis can save it; the test releases it
# before a fresh Sidekiq takes it up again.
class LongJob
  include Sidekiq::Worker
  include Events

  def perform(name, seconds)
    event(name, "start")
    release = File.join(ENV.fetch("JOBS_DIR"), "release")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    sleep(0.05) until File.exist?(release) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    event(name, "done")
  end
end
