module payguard/pgsign

go 1.19
