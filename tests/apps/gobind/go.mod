module gobind

go 1.19
