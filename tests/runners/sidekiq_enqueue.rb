# Enqueues jobs on $REDIS_URL's queue:default: ruby sidekiq_enqueue.rb
# CLASS:NAME:SECONDS ... (Sidekiq's own client, as an application would).
require "sidekiq"
require_relative "sidekiq_jobs"

ARGV.each do |spec|
  klass, name, seconds = spec.split(":")
  Sidekiq::Client.push("class" => Object.const_get(klass), "args" => [name, Float(seconds)], "retry" => true)
end
