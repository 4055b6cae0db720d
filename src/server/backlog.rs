//! Store work the backend's queue had no room for. Jobs wait here, in
//! order, and go as the queue drains: a job never overtakes one queued
//! before it, so the store applies them in the order the engine asked.

use std::collections::VecDeque;

use crate::backend::Backend;
use crate::cluster::Replica;

pub struct Backlog<R: Replica> {
    waiting: VecDeque<R::Work>,
}

impl<R: Replica> Backlog<R> {
    pub fn new() -> Backlog<R> {
        Backlog {
            waiting: VecDeque::new(),
        }
    }

    /// Queues `job` for the backend without blocking and without
    /// reordering: once one had to wait, later ones wait behind it.
    pub fn enqueue(&mut self, backend: &mut Backend<R>, job: R::Work) {
        if self.waiting.is_empty() {
            if let Err(job) = backend.submit(job) {
                self.waiting.push_back(job);
            }
        } else {
            self.waiting.push_back(job);
        }
    }

    /// Hands the backend as many waiting jobs as it takes.
    pub fn drain(&mut self, backend: &mut Backend<R>) {
        while let Some(job) = self.waiting.pop_front() {
            if let Err(job) = backend.submit(job) {
                self.waiting.push_front(job);
                return;
            }
        }
    }
}
