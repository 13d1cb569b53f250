module digitize/bench/loadgen

go 1.19
