package client

// reqQueue is an intrusive FIFO of checkout requests: O(1) push, pop and removal of any
// element, no allocation. A request is in at most one queue at a time. Guarded by Client.mu.
type reqQueue struct {
	head, tail *coReq
	n          int
}

func (q *reqQueue) len() int { return q.n }

func (q *reqQueue) push(r *coReq) {
	r.prev, r.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = r
	} else {
		q.head = r
	}
	q.tail = r
	q.n++
}

func (q *reqQueue) pop() *coReq {
	r := q.head
	if r != nil {
		q.remove(r)
	}
	return r
}

func (q *reqQueue) remove(r *coReq) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		q.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		q.tail = r.prev
	}
	r.prev, r.next = nil, nil
	q.n--
}
