// A plain Java HTTP/1.1 server on the socket it inherits as stdin: System.inheritedChannel()
// returns the listening socket when fd 0 is one, so it runs as `sh -c 'exec java ... <&3'`
// (fd 3 is the socket baton passes). One thread per connection, keep-alive. On SIGTERM (the
// JVM's shutdown hook) it stops accepting, answers the next request of each connection with
// `Connection: close`, gives idle connections 1 s to send one, then exits.
import java.io.*;
import java.net.*;
import java.nio.channels.*;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.*;

public class Server {
    static volatile boolean draining = false;
    static final AtomicInteger open = new AtomicInteger();
    static final long PID = ProcessHandle.current().pid();

    public static void main(String[] args) throws Exception {
        Channel inherited = System.inheritedChannel();
        if (!(inherited instanceof ServerSocketChannel)) {
            System.err.println("Server.java: stdin is not a listening socket");
            System.exit(2);
        }
        ServerSocketChannel listener = (ServerSocketChannel) inherited;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            draining = true;
            try { listener.close(); } catch (IOException e) { }
            long grace = System.currentTimeMillis() + 1000;
            while (open.get() > 0 && System.currentTimeMillis() < grace) {
                try { Thread.sleep(10); } catch (InterruptedException e) { return; }
            }
            System.out.println("Server.java: pid=" + PID + " drained");
            Runtime.getRuntime().halt(0);
        }));
        System.out.println("Server.java: pid=" + PID + " serving " + listener.getLocalAddress());
        while (true) {
            SocketChannel conn;
            try {
                conn = listener.accept();
            } catch (ClosedChannelException e) {
                Thread.sleep(Long.MAX_VALUE); // the shutdown hook ends the process
                return;
            }
            open.incrementAndGet();
            Thread t = new Thread(() -> serve(conn.socket()));
            t.setDaemon(true);
            t.start();
        }
    }

    static void serve(Socket s) {
        try (s) {
            s.setTcpNoDelay(true);
            BufferedReader in = new BufferedReader(
                new InputStreamReader(s.getInputStream(), StandardCharsets.ISO_8859_1));
            OutputStream out = s.getOutputStream();
            while (true) {
                String line = in.readLine();
                if (line == null) return;
                boolean close = false;
                String h;
                while ((h = in.readLine()) != null && !h.isEmpty()) {
                    if (h.toLowerCase().startsWith("connection:") && h.toLowerCase().contains("close")) close = true;
                }
                if (h == null) return;
                close |= draining;
                byte[] body = ("hello from java pid " + PID + "\n").getBytes(StandardCharsets.ISO_8859_1);
                String head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + body.length
                    + "\r\nX-Worker-Pid: " + PID + (close ? "\r\nConnection: close" : "") + "\r\n\r\n";
                out.write(head.getBytes(StandardCharsets.ISO_8859_1));
                out.write(body);
                out.flush();
                if (close) return;
            }
        } catch (IOException e) {
        } finally {
            open.decrementAndGet();
        }
    }
}
